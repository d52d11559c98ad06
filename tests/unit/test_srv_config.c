/*
 * test_srv_config.c: the daemon's option table: defaults, env < argv precedence, both
 * "--opt v" and "--opt=v" forms, and error messages that name the offending option.
 */
#include <string.h>

#include "config.h"
#include "tap.h"

static int parse(srv_config *c, int argc, char **argv, char **env, char *err)
{
    srv_config_defaults(c);
    return srv_config_parse(c, argc, argv, env, err, 256);
}

int main(void)
{
    srv_config c;
    char err[256];

    srv_config_defaults(&c);
    is_str(c.host, "127.0.0.1", "default host");
    is_int(c.port, 8080, "default port");
    is_str(c.data_dir, "./thawd-data", "default data dir");
    is_int(c.workers, 1, "default workers");
    is_int(c.http_threads, 4, "default http threads");
    is_int(c.conn_timeout, 30, "default conn timeout");
    is_int(c.max_body, 1048576, "default max body");
    is_int(c.log_level, SRV_LOG_INFO, "default log level");

    char *a1[] = {"--port", "0", "--workers=3", "--log-level", "debug", "--data-dir", "/tmp/x"};
    is_int(parse(&c, 7, a1, NULL, err), 0, "valid options parse");
    is_int(c.port, 0, "--port 0");
    is_int(c.workers, 3, "--workers=3");
    is_int(c.log_level, SRV_LOG_DEBUG, "--log-level debug");
    is_str(c.data_dir, "/tmp/x", "--data-dir");

    char *env[] = {"PATH=/bin", "THAWD_PORT=9000", "THAWD_MAX_BODY=100", "THAWD_HOST=0.0.0.0",
                   NULL};
    is_int(parse(&c, 0, NULL, env, err), 0, "env parses");
    is_int(c.port, 9000, "THAWD_PORT applies");
    is_int(c.max_body, 100, "THAWD_MAX_BODY applies");
    is_str(c.host, "0.0.0.0", "THAWD_HOST applies");
    char *a2[] = {"--port=1234"};
    is_int(parse(&c, 1, a2, env, err), 0, "env + argv parse");
    is_int(c.port, 1234, "the command line wins over the environment");

    char *bad1[] = {"--port", "70000"};
    ok(parse(&c, 2, bad1, NULL, err) != 0 && strstr(err, "--port"), "port out of range: %s", err);
    char *bad2[] = {"--workers", "0"};
    ok(parse(&c, 2, bad2, NULL, err) != 0 && strstr(err, "--workers"), "zero workers: %s", err);
    char *bad3[] = {"--log-level", "loud"};
    ok(parse(&c, 2, bad3, NULL, err) != 0 && strstr(err, "--log-level"), "bad level: %s", err);
    char *bad4[] = {"--frobnicate", "1"};
    ok(parse(&c, 2, bad4, NULL, err) != 0 && strstr(err, "--frobnicate"), "unknown: %s", err);
    char *bad5[] = {"--port"};
    ok(parse(&c, 1, bad5, NULL, err) != 0 && strstr(err, "--port"), "missing value: %s", err);
    char *bad6[] = {"--max-body", "12abc"};
    ok(parse(&c, 2, bad6, NULL, err) != 0 && strstr(err, "--max-body"), "trailing junk: %s", err);
    char *bad7[] = {"--host="};
    ok(parse(&c, 1, bad7, NULL, err) != 0 && strstr(err, "--host"), "empty host: %s", err);
    char *benv[] = {"THAWD_HTTP_THREADS=many", NULL};
    ok(parse(&c, 0, NULL, benv, err) != 0 && strstr(err, "THAWD_HTTP_THREADS"),
       "bad env value names the variable: %s", err);
    char *over[] = {"--http-threads", "3"};
    is_int(parse(&c, 2, over, benv, err), 0, "a bad env value the command line overrides is ignored");
    is_int(c.http_threads, 3, "the overriding value is used");
    char *bad8[] = {"stray"};
    ok(parse(&c, 1, bad8, NULL, err) != 0 && strstr(err, "stray"), "positional: %s", err);

    srv_config_defaults(&c);
    c.workers = 2;
    srv_config_finish(&c, 4);
    is_int(c.blas_threads, 2, "auto blas threads = cores / workers");
    srv_config_defaults(&c);
    c.workers = 3;
    srv_config_finish(&c, 2);
    is_int(c.blas_threads, 1, "auto blas threads is at least 1");
    srv_config_defaults(&c);
    c.blas_threads = 5;
    srv_config_finish(&c, 2);
    is_int(c.blas_threads, 5, "an explicit value is kept by finish");

    return done_testing();
}
