/*
 * test_store_events.c: a job's event log (monotonic ids, pagination, validation) and its
 * artifacts (replace on re-add, validation).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "storage.h"
#include "store_tmpdir.h"
#include "tap.h"

#define SHA_A "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define SHA_B "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"

static int db_seq;

static store *fresh_store(void)
{
    char path[1024];
    store *s = NULL;
    int rc;

    snprintf(path, sizeof(path), "%s/events-%d.db", tmpdir, ++db_seq);
    rc = store_open(path, NULL, NULL, &s);
    if (rc != STORE_OK) {
        printf("Bail out! store_open(%s): %s\n", path, store_strerror(rc));
        exit(1);
    }
    return s;
}

static void test_events(void)
{
    store *s = fresh_store();
    store_event *ev = NULL;
    int64_t a = 0, b = 0, ids[5] = {0}, other = 0, id = -1;
    size_t n = 0;
    bool more = false, increasing = true;
    char msg[32];

    if (store_job_enqueue(s, "a", "{}", &a) != STORE_OK ||
        store_job_enqueue(s, "b", "{}", &b) != STORE_OK) {
        ok(false, "enqueue jobs for events");
        store_close(s);
        return;
    }
    for (int i = 0; i < 5; i++) {
        snprintf(msg, sizeof(msg), "event %d", i);
        if (store_event_add(s, a, "info", "message", msg, i == 2 ? "{\"k\":2}" : NULL, &ids[i]) !=
            STORE_OK)
            increasing = false;
        if (i == 1 && store_event_add(s, b, "warn", "state", "other job", NULL, &other) != 0)
            increasing = false;
        if (i > 0 && ids[i] <= ids[i - 1])
            increasing = false;
    }
    ok(increasing, "event ids increase across the database");
    ok(other > ids[1] && other < ids[2], "ids interleave across jobs in time order");

    is_int(store_event_list(s, a, 0, 2, &ev, &n, &more), STORE_OK, "page 1");
    ok(n == 2 && more && ev[0].id == ids[0] && ev[1].id == ids[1], "oldest first, has_more");
    if (n == 2) {
        is_int(ev[0].job_id, a, "job_id");
        is_str(ev[0].level, "info", "level");
        is_str(ev[0].type, "message", "type");
        is_str(ev[0].message, "event 0", "message");
        ok(ev[0].data_json == NULL, "NULL data_json stays NULL");
        ok(ev[0].created_at > 1600000000000LL, "created_at in ms");
    }
    store_event_list_free(ev, n);
    is_int(store_event_list(s, a, ids[1], 2, &ev, &n, &more), STORE_OK, "page 2");
    ok(n == 2 && more && ev[0].id == ids[2] && ev[1].id == ids[3], "after the cursor");
    if (n == 2)
        is_str(ev[0].data_json, "{\"k\":2}", "data_json round-trips");
    store_event_list_free(ev, n);
    is_int(store_event_list(s, a, ids[3], 2, &ev, &n, &more), STORE_OK, "page 3");
    ok(n == 1 && !more && ev[0].id == ids[4], "last event, no more");
    store_event_list_free(ev, n);
    is_int(store_event_list(s, a, ids[4], 2, &ev, &n, &more), STORE_OK, "past the end");
    ok(n == 0 && ev == NULL && !more, "empty page");
    is_int(store_event_list(s, b, 0, 10, &ev, &n, &more), STORE_OK, "other job's events");
    ok(n == 1 && ev[0].id == other, "only its own event");
    store_event_list_free(ev, n);

    is_int(store_event_add(s, 999, "info", "state", "x", NULL, &id), STORE_ENOTFOUND,
           "event for an unknown job -> ENOTFOUND");
    is_int(store_event_add(s, a, "debug", "state", "x", NULL, &id), STORE_EINVAL, "bad level");
    is_int(store_event_add(s, a, NULL, "state", "x", NULL, &id), STORE_EINVAL, "NULL level");
    is_int(store_event_add(s, a, "info", "", "x", NULL, &id), STORE_EINVAL, "empty type");
    is_int(store_event_add(s, a, "info", "Bad Type", "x", NULL, &id), STORE_EINVAL,
           "type with bad characters");
    is_int(store_event_add(s, a, "info", "state", NULL, NULL, &id), STORE_EINVAL, "NULL message");
    is_int(store_event_add(s, 0, "info", "state", "x", NULL, &id), STORE_EINVAL, "job id 0");
    is_int(id, -1, "id untouched on failure");
    is_int(store_event_add(s, a, "error", "lr_find", "", NULL, NULL), STORE_OK,
           "empty message and NULL id out are fine");
    is_int(store_event_list(s, a, 0, 0, &ev, &n, &more), STORE_EINVAL, "limit 0");
    is_int(store_event_list(s, a, 0, 1001, &ev, &n, &more), STORE_EINVAL, "limit 1001");
    is_int(store_event_list(s, a, -1, 10, &ev, &n, &more), STORE_EINVAL, "negative cursor");
    is_int(store_event_list(s, a, 0, 10, NULL, &n, &more), STORE_EINVAL, "NULL out");
    store_event_fini(NULL);
    store_event_list_free(NULL, 0);
    store_close(s);
}

static void test_artifacts(void)
{
    store *s = fresh_store();
    store_artifact *arts = NULL;
    int64_t a = 0;
    size_t n = 0;

    if (store_job_enqueue(s, "a", "{}", &a) != STORE_OK) {
        ok(false, "enqueue job for artifacts");
        store_close(s);
        return;
    }
    is_int(store_artifact_list(s, a, &arts, &n), STORE_OK, "list with none");
    ok(n == 0 && arts == NULL, "empty list");
    is_int(store_artifact_add(s, a, "weights", "model", "/d/jobs/1/model.safetensors", 100, SHA_A),
           STORE_OK, "add weights");
    is_int(store_artifact_add(s, a, "checkpoint", "checkpoint", "/d/jobs/1/checkpoint.safetensors",
                              200, SHA_A),
           STORE_OK, "add checkpoint");
    is_int(store_artifact_add(s, a, "checkpoint", "model", "/d/jobs/1/model.ckpt", 50, SHA_A),
           STORE_OK, "same name, other kind is a different artifact");
    is_int(store_artifact_list(s, a, &arts, &n), STORE_OK, "list");
    is_int(n, 3, "three artifacts");
    if (n == 3) {
        is_str(arts[0].kind, "weights", "first kind");
        is_str(arts[0].name, "model", "first name");
        is_str(arts[0].path, "/d/jobs/1/model.safetensors", "first path");
        is_int(arts[0].size, 100, "first size");
        is_str(arts[0].sha256, SHA_A, "first sha256");
        is_int(arts[0].job_id, a, "job id");
        ok(arts[0].created_at > 1600000000000LL, "created_at in ms");
    }
    store_artifact_list_free(arts, n);

    is_int(store_artifact_add(s, a, "weights", "model", "/d/jobs/1/model2.safetensors", 123, SHA_B),
           STORE_OK, "re-add weights/model");
    is_int(store_artifact_list(s, a, &arts, &n), STORE_OK, "list after replace");
    is_int(n, 3, "still three artifacts");
    if (n == 3) {
        is_str(arts[2].kind, "weights", "the replacement is now the newest");
        is_str(arts[2].path, "/d/jobs/1/model2.safetensors", "new path");
        is_int(arts[2].size, 123, "new size");
        is_str(arts[2].sha256, SHA_B, "new sha256");
        is_str(arts[0].kind, "checkpoint", "the others keep their order");
    }
    store_artifact_list_free(arts, n);

    is_int(store_artifact_add(s, 999, "weights", "m", "/p", 1, SHA_A), STORE_ENOTFOUND,
           "unknown job -> ENOTFOUND");
    is_int(store_artifact_add(s, a, "weights", "m", "/p", 1,
                              "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef"),
           STORE_EINVAL, "uppercase sha256");
    is_int(store_artifact_add(s, a, "weights", "m", "/p", 1, "abc"), STORE_EINVAL, "short sha");
    is_int(store_artifact_add(s, a, "weights", "m", "/p", 1, SHA_A "0"), STORE_EINVAL, "long sha");
    is_int(store_artifact_add(s, a, "weights", "m", "/p", -1, SHA_A), STORE_EINVAL,
           "negative size");
    is_int(store_artifact_add(s, a, "", "m", "/p", 1, SHA_A), STORE_EINVAL, "empty kind");
    is_int(store_artifact_add(s, a, "weights", NULL, "/p", 1, SHA_A), STORE_EINVAL, "NULL name");
    is_int(store_artifact_add(s, a, "weights", "m", NULL, 1, SHA_A), STORE_EINVAL, "NULL path");
    is_int(store_artifact_list(s, 0, &arts, &n), STORE_EINVAL, "list job 0");
    is_int(store_artifact_list(s, a, NULL, &n), STORE_EINVAL, "list NULL out");
    store_artifact_fini(NULL);
    store_artifact_list_free(NULL, 0);
    store_close(s);
}

int main(void)
{
    make_tmpdir();
    test_events();
    test_artifacts();
    remove_tmpdir();
    return done_testing();
}
