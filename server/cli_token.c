/*
 * cli_token.c: `thawd token create|list|revoke`, the only way to make API tokens.
 *
 * DESIGN: the first (admin) token cannot come from an open endpoint, so tokens are managed
 * by this command writing straight to DATA/thawd.db. It does not take the data dir's lock:
 * SQLite (WAL, busy timeout) lets it run next to a live daemon, which sees a new or revoked
 * token on its next request. The token text goes to stdout alone (so `T=$(thawd token
 * create ...)` works) and is never shown again; everything else goes to stderr.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "auth.h"
#include "config.h"
#include "files.h"
#include "json_io.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: thawd token create --name NAME --scope SCOPES [--data-dir DIR]\n"
                 "       thawd token list [--data-dir DIR]\n"
                 "       thawd token revoke ID [--data-dir DIR]\n"
                 "\n"
                 "SCOPES is a comma-separated list of read (GET requests), submit (create, cancel\n"
                 "and retry jobs; upload datasets) and admin (everything). The token is printed\n"
                 "once on stdout; only its SHA-256 is stored. DIR defaults to $THAWD_DATA_DIR,\n"
                 "else ./thawd-data, like the daemon.\n");
}

/* Prints storage warnings and errors (not the INFO migration notes) to stderr. */
static void cli_store_log(store_log_level level, const char *msg, void *user)
{
    (void)user;
    if (level >= STORE_LOG_WARN)
        fprintf(stderr, "thawd: %s\n", msg);
}

/* Opens DIR/thawd.db; `create` makes DIR (and the database) when missing, otherwise a
 * missing database is an error. Returns 0 or 1 after printing why. */
static int open_db(const char *dir, bool create, store **s)
{
    char path[SRV_CONFIG_STR_MAX + 16];
    *s = NULL;
    if (snprintf(path, sizeof path, "%s/thawd.db", dir) >= (int)sizeof path) {
        fprintf(stderr, "thawd: --data-dir is too long\n");
        return 1;
    }
    if (create) {
        if (srv_mkdir_p(dir) != 0) {
            fprintf(stderr, "thawd: cannot create data dir %s: %s\n", dir, strerror(errno));
            return 1;
        }
    } else if (access(path, F_OK) != 0) {
        fprintf(stderr, "thawd: no database at %s (check --data-dir)\n", path);
        return 1;
    }
    int rc = store_open(path, cli_store_log, NULL, s);
    if (rc != 0) {
        fprintf(stderr, "thawd: cannot open the database %s: %s\n", path, store_strerror(rc));
        return 1;
    }
    return 0;
}

/* Parses a token id argument. */
static bool parse_token_id(const char *s, int64_t *id)
{
    int64_t v = 0;
    if (!s || !*s || strlen(s) > 18)
        return false;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    *id = v;
    return v > 0;
}

static bool name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 64)
        return false;
    for (const char *p = name; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return false;
    return true;
}

static int cmd_create(const char *dir, const char *name, const char *scopes)
{
    char err[256], token[SRV_TOKEN_MAX], scope_text[32];
    unsigned mask = 0;
    int64_t id = 0;
    store *s = NULL;
    if (!name) {
        fprintf(stderr, "thawd: token create: --name is required\n");
        return 2;
    }
    if (!name_valid(name)) {
        fprintf(stderr, "thawd: token create: --name must be 1..64 printable characters\n");
        return 2;
    }
    if (!scopes) {
        fprintf(stderr, "thawd: token create: --scope is required (read, submit, admin)\n");
        return 2;
    }
    if (srv_scopes_parse(scopes, &mask, err, sizeof err) != 0) {
        fprintf(stderr, "thawd: token create: --scope: %s\n", err);
        return 2;
    }
    if (open_db(dir, true, &s) != 0)
        return 1;
    int rc = srv_token_create(s, name, mask, token, &id, err, sizeof err);
    store_close(s);
    if (rc != 0) {
        fprintf(stderr, "thawd: token create: %s\n", err);
        return 1;
    }
    srv_scopes_format(mask, scope_text, sizeof scope_text);
    printf("%s\n", token);
    fflush(stdout);
    memset(token, 0, sizeof token);
    fprintf(stderr,
            "thawd: created token id=%lld name=%s scopes=%s; it is shown only this once, store "
            "it now\n",
            (long long)id, name, scope_text);
    return 0;
}

static int cmd_list(const char *dir)
{
    store *s = NULL;
    store_token *t = NULL;
    size_t n = 0;
    if (open_db(dir, false, &s) != 0)
        return 1;
    int rc = store_token_list(s, &t, &n);
    store_close(s);
    if (rc != 0) {
        fprintf(stderr, "thawd: token list: %s\n", store_strerror(rc));
        return 1;
    }
    printf("%-6s %-20s %-18s %-24s %-24s %s\n", "ID", "NAME", "SCOPES", "CREATED", "LAST_USED",
           "STATUS");
    for (size_t i = 0; i < n; i++) {
        char created[40], used[40], status[48];
        srv_time_format(t[i].created_at, created, sizeof created);
        if (t[i].last_used_at)
            srv_time_format(t[i].last_used_at, used, sizeof used);
        else
            snprintf(used, sizeof used, "never");
        if (t[i].revoked_at) {
            char when[40];
            srv_time_format(t[i].revoked_at, when, sizeof when);
            snprintf(status, sizeof status, "revoked %s", when);
        } else {
            snprintf(status, sizeof status, "active");
        }
        printf("%-6lld %-20s %-18s %-24s %-24s %s\n", (long long)t[i].id, t[i].name, t[i].scopes,
               created, used, status);
    }
    store_token_list_free(t, n);
    return 0;
}

static int cmd_revoke(const char *dir, const char *id_text)
{
    int64_t id = 0;
    store *s = NULL;
    if (!id_text || !parse_token_id(id_text, &id)) {
        fprintf(stderr, "thawd: token revoke: expected a token id (see `thawd token list`)\n");
        return 2;
    }
    if (open_db(dir, false, &s) != 0)
        return 1;
    int rc = store_token_revoke(s, id);
    store_close(s);
    if (rc == STORE_ENOTFOUND) {
        fprintf(stderr, "thawd: token revoke: no token with id %lld\n", (long long)id);
        return 1;
    }
    if (rc == STORE_ECONFLICT) {
        fprintf(stderr, "thawd: token revoke: token %lld was already revoked\n", (long long)id);
        return 1;
    }
    if (rc != 0) {
        fprintf(stderr, "thawd: token revoke: %s\n", store_strerror(rc));
        return 1;
    }
    fprintf(stderr, "thawd: revoked token %lld\n", (long long)id);
    return 0;
}

int srv_cli_token(int argc, char **argv)
{
    const char *dir = getenv("THAWD_DATA_DIR");
    const char *name = NULL, *scopes = NULL, *positional = NULL;
    if (!dir || !*dir)
        dir = "./thawd-data";
    if (argc < 1) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[0];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        const char *key = NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strncmp(a, "--name", 6) == 0 && (a[6] == '\0' || a[6] == '='))
            slot = &name, key = "--name";
        else if (strncmp(a, "--scope", 7) == 0 && (a[7] == '\0' || a[7] == '='))
            slot = &scopes, key = "--scope";
        else if (strncmp(a, "--data-dir", 10) == 0 && (a[10] == '\0' || a[10] == '='))
            slot = &dir, key = "--data-dir";
        if (slot) {
            const char *eq = strchr(a, '=');
            if (eq) {
                *slot = eq + 1;
            } else if (i + 1 < argc) {
                *slot = argv[++i];
            } else {
                fprintf(stderr, "thawd: token %s: %s needs a value\n", cmd, key);
                return 2;
            }
            if (slot == &dir && !**slot) {
                fprintf(stderr, "thawd: token %s: --data-dir must not be empty\n", cmd);
                return 2;
            }
            continue;
        }
        if (a[0] == '-' || positional) {
            fprintf(stderr, "thawd: token %s: unexpected argument '%s' (see thawd token --help)\n",
                    cmd, a);
            return 2;
        }
        positional = a;
    }
    if (strcmp(cmd, "create") == 0 || strcmp(cmd, "list") == 0) {
        if (positional) {
            fprintf(stderr, "thawd: token %s: unexpected argument '%s'\n", cmd, positional);
            return 2;
        }
        if (strcmp(cmd, "list") == 0 && (name || scopes)) {
            fprintf(stderr, "thawd: token list: only --data-dir is accepted\n");
            return 2;
        }
        return strcmp(cmd, "create") == 0 ? cmd_create(dir, name, scopes) : cmd_list(dir);
    }
    if (strcmp(cmd, "revoke") == 0) {
        if (name || scopes) {
            fprintf(stderr, "thawd: token revoke: only ID and --data-dir are accepted\n");
            return 2;
        }
        return cmd_revoke(dir, positional);
    }
    fprintf(stderr, "thawd: token: unknown command '%s' (create, list or revoke)\n", cmd);
    return 2;
}
