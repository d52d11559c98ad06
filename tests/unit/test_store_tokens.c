/*
 * test_store_tokens.c: API token rows: create with argument checks, get, list order, revoke
 * (once, then conflict), last-use stamps that never go back, the active count, and that the
 * rows survive reopening the database file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"
#include "tap.h"

static const char hash_a[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
static const char hash_b[] = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

int main(void)
{
    char dir[512], path[600];
    const char *base = getenv("TMPDIR");
    store *s = NULL;
    store_token t, *list = NULL;
    size_t n = 0;
    int64_t id1 = 0, id2 = 0, id = 0, count = -1;
    char name65[66];

    snprintf(dir, sizeof dir, "%s/thawd-tokens-XXXXXX", base && base[0] ? base : "/tmp");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp failed\n");
        return 1;
    }
    snprintf(path, sizeof path, "%s/t.db", dir);
    if (store_open(path, NULL, NULL, &s) != STORE_OK) {
        printf("Bail out! store_open failed\n");
        return 1;
    }

    is_int(store_token_count_active(s, &count), STORE_OK, "count on an empty table");
    is_int(count, 0, "no active tokens at first");

    /* Argument checks. */
    memset(name65, 'x', 65);
    name65[65] = '\0';
    is_int(store_token_create(s, "", "read", hash_a, &id), STORE_EINVAL, "empty name refused");
    is_int(store_token_create(s, name65, "read", hash_a, &id), STORE_EINVAL,
           "65-byte name refused");
    is_int(store_token_create(s, "ci", "", hash_a, &id), STORE_EINVAL, "empty scopes refused");
    is_int(store_token_create(s, "ci", "read", "abc", &id), STORE_EINVAL, "short digest refused");
    is_int(store_token_create(s, "ci", "read",
                              "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                              &id),
           STORE_EINVAL, "upper-case digest refused");
    is_int(store_token_create(s, "ci", "read", hash_a, NULL), STORE_EINVAL, "NULL id refused");
    is_int(store_token_get(s, 0, &t), STORE_EINVAL, "get id 0 refused");
    is_int(store_token_get(s, 99, &t), STORE_ENOTFOUND, "get unknown id");
    is_int(store_token_revoke(s, 99), STORE_ENOTFOUND, "revoke unknown id");
    is_int(store_token_touch(s, 99, 5), STORE_ENOTFOUND, "touch unknown id");

    /* Create and read back. */
    is_int(store_token_create(s, "ci", "read,submit", hash_a, &id1), STORE_OK, "create ci");
    is_int(store_token_create(s, "admin", "admin", hash_b, &id2), STORE_OK, "create admin");
    ok(id1 > 0 && id2 > id1, "ids increase (%lld, %lld)", (long long)id1, (long long)id2);
    is_int(store_token_get(s, id1, &t), STORE_OK, "get ci");
    is_str(t.name, "ci", "name kept");
    is_str(t.scopes, "read,submit", "scopes kept");
    is_str(t.secret_sha256, hash_a, "digest kept");
    ok(t.created_at > 0 && t.last_used_at == 0 && t.revoked_at == 0,
       "created set, never used, active");
    store_token_fini(&t);
    is_int(store_token_count_active(s, &count), STORE_OK, "count");
    is_int(count, 2, "two active tokens");

    /* last_used_at only moves forward. */
    is_int(store_token_touch(s, id1, 5000), STORE_OK, "touch at 5000");
    is_int(store_token_touch(s, id1, 4000), STORE_OK, "touch at 4000 (earlier)");
    store_token_get(s, id1, &t);
    is_int(t.last_used_at, 5000, "last_used_at keeps the later time");
    store_token_fini(&t);

    /* Revoke once; again is a conflict. */
    is_int(store_token_revoke(s, id1), STORE_OK, "revoke ci");
    is_int(store_token_revoke(s, id1), STORE_ECONFLICT, "revoke twice is a conflict");
    store_token_get(s, id1, &t);
    ok(t.revoked_at > 0, "revoked_at set");
    store_token_fini(&t);
    store_token_count_active(s, &count);
    is_int(count, 1, "one active token after revoking");

    /* List (revoked included) survives a reopen. */
    store_close(s);
    s = NULL;
    if (store_open(path, NULL, NULL, &s) != STORE_OK) {
        printf("Bail out! reopen failed\n");
        return 1;
    }
    is_int(store_token_list(s, &list, &n), STORE_OK, "list after reopen");
    is_int(n, 2, "two rows listed");
    if (n == 2) {
        is_int(list[0].id, id1, "oldest first");
        ok(list[0].revoked_at > 0 && list[1].revoked_at == 0, "revocation persisted");
        is_str(list[1].scopes, "admin", "second row's scopes");
    }
    store_token_list_free(list, n);
    store_token_fini(NULL);
    store_token_list_free(NULL, 0);

    store_close(s);
    unlink(path);
    snprintf(path, sizeof path, "%s/t.db-wal", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/t.db-shm", dir);
    unlink(path);
    rmdir(dir);
    return done_testing();
}
