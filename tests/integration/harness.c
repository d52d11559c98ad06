/*
 * harness.c: spawn, talk to and tear down a real thawd for the integration tests.
 *
 * DESIGN: each test owns one th_daemon and one temp dir, and the daemon binds port 0, so
 * tests run in parallel without sharing anything. The daemon's stderr goes to a file per
 * start; readiness is the log line with `ready` and `url=http://HOST:PORT` (the port the
 * daemon really bound). Every wait is bounded by a generous deadline that only guards
 * against hangs; no test asserts on timing. The only processes we ever signal are the ones
 * we forked (by pid).
 */
/* nftw() is an XSI interface. */
#define _XOPEN_SOURCE 700

#include "harness.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "engine.h"

#define diagf(...)           \
    do {                     \
        printf("# ");        \
        printf(__VA_ARGS__); \
        printf("\n");        \
        fflush(stdout);      \
    } while (0)

double th_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void th_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* Reads a whole file into a NUL-terminated malloc'd buffer (caller frees), or NULL. */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return NULL;
    }
    for (;;) {
        if (len + 1 >= cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len - 1, f);
        if (got == 0)
            break;
        len += got;
    }
    fclose(f);
    buf[len] = '\0';
    if (len_out)
        *len_out = len;
    return buf;
}

/* ---- process control ------------------------------------------------------------------- */

/* Daemons we forked and have not reaped, so that a test killed by meson's timeout (SIGTERM)
 * or ^C does not leave them running. Written only by the test thread; read by the handler. */
static volatile sig_atomic_t live_pids[TH_MAX_STARTS * 4];

static void track_pid(pid_t pid, bool live)
{
    for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++) {
        if (live && live_pids[i] == 0) {
            live_pids[i] = pid;
            return;
        }
        if (!live && live_pids[i] == pid) {
            live_pids[i] = 0;
            return;
        }
    }
}

static void on_fatal_signal(int sig)
{
    for (size_t i = 0; i < sizeof(live_pids) / sizeof(live_pids[0]); i++)
        if (live_pids[i] > 0)
            kill((pid_t)live_pids[i], SIGKILL);
    signal(sig, SIG_DFL);
    raise(sig);
}

static void install_handlers(void)
{
    static bool done;
    if (done)
        return;
    done = true;
    /* A closed stdout (`| head`) must not kill the test before it stops its daemon. */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

int th_daemon_init(th_daemon *d, const char *name)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->name, sizeof(d->name), "%s", name);
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    snprintf(d->dir, sizeof(d->dir), "%s/thawd-it-%s-XXXXXX", tmp, name);
    if (!mkdtemp(d->dir)) {
        diagf("mkdtemp(%s): %s", d->dir, strerror(errno));
        d->dir[0] = '\0';
        return -1;
    }
    snprintf(d->data_dir, sizeof(d->data_dir), "%s/data", d->dir);
    install_handlers();
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
            diagf("curl_global_init failed");
            return -1;
        }
        curl_ready = true;
    }
    return 0;
}

/* Finds the ready line in `log` and parses HOST:PORT from `url=http://`. */
static bool parse_ready(const char *log, th_daemon *d)
{
    const char *line = log;
    while (line && *line) {
        const char *eol = strchr(line, '\n');
        if (!eol)
            return false; /* wait for the whole line */
        size_t n = (size_t)(eol - line);
        char buf[1024];
        if (n >= sizeof(buf))
            n = sizeof(buf) - 1;
        memcpy(buf, line, n);
        buf[n] = '\0';
        const char *url = strstr(buf, "url=http://");
        if (url && strstr(buf, "ready")) {
            const char *hostport = url + strlen("url=http://");
            size_t hl = strcspn(hostport, " \t\r/");
            const char *colon = NULL;
            for (size_t i = 0; i < hl; i++)
                if (hostport[i] == ':')
                    colon = hostport + i;
            if (!colon)
                return false;
            long port = strtol(colon + 1, NULL, 10);
            if (port <= 0 || port > 65535)
                return false;
            d->port = (int)port;
            snprintf(d->base_url, sizeof(d->base_url), "http://%.*s", (int)hl, hostport);
            return true;
        }
        line = eol + 1;
    }
    return false;
}

/* Forks $THAWD_BIN with the standard arguments plus `extra`, stdout+stderr into a new log
 * file. Returns the pid (also in d->pid) or -1. */
static pid_t spawn(th_daemon *d, const char *const *extra)
{
    const char *bin = getenv("THAWD_BIN");
    if (!bin || !*bin) {
        diagf("THAWD_BIN is not set");
        return -1;
    }
    if (d->n_starts >= TH_MAX_STARTS) {
        diagf("too many starts");
        return -1;
    }
    char *log = d->logs[d->n_starts];
    snprintf(log, sizeof(d->logs[0]), "%s/thawd.%d.log", d->dir, d->n_starts);
    d->n_starts++;

    const char *argv[64];
    size_t argc = 0;
    argv[argc++] = bin;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    argv[argc++] = "--data-dir";
    argv[argc++] = d->data_dir;
    argv[argc++] = "--log-level";
    argv[argc++] = "debug";
    argv[argc++] = "--blas-threads";
    argv[argc++] = "1";
    for (size_t i = 0; extra && extra[i] && argc < 63; i++)
        argv[argc++] = extra[i];
    argv[argc] = NULL;

    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        diagf("open(%s): %s", log, strerror(errno));
        return -1;
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        diagf("fork: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(bin, (char *const *)(uintptr_t)argv);
        dprintf(2, "exec %s: %s\n", bin, strerror(errno));
        _exit(127);
    }
    close(fd);
    d->pid = pid;
    track_pid(pid, true);
    return pid;
}

int th_daemon_start(th_daemon *d, const char *const *extra, double timeout_s)
{
    d->port = 0;
    d->base_url[0] = '\0';
    pid_t pid = spawn(d, extra);
    if (pid < 0)
        return -1;
    const char *log = d->logs[d->n_starts - 1];
    double deadline = th_now() + timeout_s;
    for (;;) {
        char *text = read_file(log, NULL);
        bool ready = text && parse_ready(text, d);
        free(text);
        if (ready)
            return 0;
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            track_pid(pid, false);
            d->pid = 0;
            diagf("thawd exited before ready (%s %d)", WIFEXITED(st) ? "status" : "signal",
                  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            th_daemon_dump_log(d, 30);
            return -1;
        }
        if (th_now() > deadline) {
            diagf("no ready line after %.0f s", timeout_s);
            th_daemon_dump_log(d, 30);
            th_daemon_kill9(d);
            return -1;
        }
        th_sleep_ms(20);
    }
}

/* Waits for d->pid with a deadline; returns the raw wait status or -1 on timeout. */
static int wait_deadline(th_daemon *d, double timeout_s)
{
    double deadline = th_now() + timeout_s;
    for (;;) {
        int st;
        pid_t w = waitpid(d->pid, &st, WNOHANG);
        if (w == d->pid) {
            track_pid(d->pid, false);
            d->pid = 0;
            return st;
        }
        if (w < 0 && errno != EINTR) {
            track_pid(d->pid, false);
            d->pid = 0;
            return -1;
        }
        if (th_now() > deadline)
            return -1;
        th_sleep_ms(20);
    }
}

int th_daemon_stop(th_daemon *d, double timeout_s)
{
    return th_daemon_stop_sig(d, SIGTERM, timeout_s);
}

int th_daemon_stop_sig(th_daemon *d, int sig, double timeout_s)
{
    if (d->pid <= 0)
        return -1;
    if (kill(d->pid, sig) != 0) {
        diagf("kill(%d): %s", sig, strerror(errno));
        return -1;
    }
    int st = wait_deadline(d, timeout_s);
    if (st == -1) {
        diagf("thawd did not exit within %.0f s of signal %d", timeout_s, sig);
        th_daemon_kill9(d);
        return -1;
    }
    if (WIFEXITED(st))
        return WEXITSTATUS(st);
    return 1000 + WTERMSIG(st);
}

void th_daemon_kill9(th_daemon *d)
{
    if (d->pid <= 0)
        return;
    kill(d->pid, SIGKILL);
    int st;
    while (waitpid(d->pid, &st, 0) < 0 && errno == EINTR) {
    }
    track_pid(d->pid, false);
    d->pid = 0;
}

int th_daemon_run_once(th_daemon *d, const char *const *extra, double timeout_s)
{
    pid_t running = d->pid;
    if (spawn(d, extra) < 0) {
        d->pid = running;
        return -1;
    }
    int st = wait_deadline(d, timeout_s);
    if (st == -1) {
        diagf("second thawd still running after %.0f s", timeout_s);
        th_daemon_kill9(d);
    }
    d->pid = running;
    if (st == -1)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
}

void th_daemon_dump_log(const th_daemon *d, int lines)
{
    if (d->n_starts == 0)
        return;
    const char *path = d->logs[d->n_starts - 1];
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text)
        return;
    const char *p = text + len;
    int seen = 0;
    while (p > text) {
        p--;
        if (*p == '\n' && p + 1 < text + len && ++seen > lines) {
            p++;
            break;
        }
    }
    diagf("---- tail of %s ----", path);
    const char *line = p;
    while (*line) {
        const char *eol = strchr(line, '\n');
        int n = eol ? (int)(eol - line) : (int)strlen(line);
        diagf("%.*s", n, line);
        if (!eol)
            break;
        line = eol + 1;
    }
    free(text);
}

bool th_daemon_log_contains(const th_daemon *d, const char *needle)
{
    if (d->n_starts == 0)
        return false;
    char *text = read_file(d->logs[d->n_starts - 1], NULL);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

bool th_daemon_log_wait(const th_daemon *d, const char *needle, double timeout_s)
{
    for (int waited_ms = 0;; waited_ms += 10) {
        if (th_daemon_log_contains(d, needle))
            return true;
        if (waited_ms >= timeout_s * 1000.0)
            return false;
        th_sleep_ms(10);
    }
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb; /* remove() handles files and empty dirs alike */
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        diagf("remove(%s): %s", path, strerror(errno));
    return 0;
}

bool th_daemon_fini(th_daemon *d, bool dump_log)
{
    static const char *const reports[] = {"AddressSanitizer", "runtime error:", "ThreadSanitizer",
                                          "LeakSanitizer"};
    if (d->pid > 0) {
        diagf("thawd still running at teardown; killing it");
        th_daemon_kill9(d);
    }
    bool clean = true;
    for (int i = 0; i < d->n_starts; i++) {
        char *text = read_file(d->logs[i], NULL);
        if (!text)
            continue;
        for (size_t k = 0; k < sizeof(reports) / sizeof(reports[0]); k++) {
            if (strstr(text, reports[k])) {
                diagf("%s contains \"%s\"", d->logs[i], reports[k]);
                clean = false;
            }
        }
        free(text);
    }
    if (dump_log || !clean)
        th_daemon_dump_log(d, clean ? 40 : 200);
    if (d->dir[0] && !getenv("THAWD_KEEP_TMP"))
        nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return clean;
}

/* ---- HTTP ------------------------------------------------------------------------------ */

typedef struct sink {
    char *buf;
    size_t len, cap;
    FILE *file;     /* when set, the body goes here instead of buf */
    int stop_after; /* > 0: abort the transfer once this many SSE records with an id arrived */
    bool stopped;   /* the transfer was aborted on purpose */
} sink;

/* SSE records carrying an id in `buf` (each starts a line with "id:"). */
static int count_sse_ids(const char *buf)
{
    int n = 0;
    for (const char *p = buf; (p = strstr(p, "id:")) != NULL; p += 3)
        if (p == buf || p[-1] == '\n')
            n++;
    return n;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *user)
{
    sink *s = user;
    size_t n = size * nmemb;
    if (s->file)
        return fwrite(ptr, 1, n, s->file);
    if (s->len + n + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return 0;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, ptr, n);
    s->len += n;
    s->buf[s->len] = '\0';
    if (s->stop_after > 0 && count_sse_ids(s->buf) >= s->stop_after) {
        s->stopped = true;
        return 0; /* enough: curl aborts with CURLE_WRITE_ERROR */
    }
    return n;
}

static void copy_header(char *dst, size_t cap, const char *line, size_t n, const char *name)
{
    size_t nl = strlen(name);
    if (n <= nl || strncasecmp(line, name, nl) != 0 || line[nl] != ':')
        return;
    const char *v = line + nl + 1;
    const char *end = line + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
        end--;
    snprintf(dst, cap, "%.*s", (int)(end - v), v);
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *user)
{
    th_resp *r = user;
    size_t n = size * nmemb;
    /* A new status line (after a 100 Continue) starts a fresh header set. */
    if (n >= 5 && strncmp(line, "HTTP/", 5) == 0) {
        r->content_type[0] = r->location[0] = r->allow[0] = '\0';
        return n;
    }
    copy_header(r->content_type, sizeof(r->content_type), line, n, "Content-Type");
    copy_header(r->location, sizeof(r->location), line, n, "Location");
    copy_header(r->allow, sizeof(r->allow), line, n, "Allow");
    copy_header(r->etag, sizeof(r->etag), line, n, "ETag");
    size_t used = strlen(r->headers);
    if (n > 2 && used + n + 1 < sizeof(r->headers)) {
        memcpy(r->headers + used, line, n);
        r->headers[used + n] = '\0';
    }
    return n;
}

bool th_resp_header(const th_resp *r, const char *name, char *out, size_t size)
{
    size_t nl = strlen(name);
    for (const char *p = r->headers; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t vl = (size_t)(p + len - v);
            while (vl > 0 && (v[vl - 1] == '\r' || v[vl - 1] == ' '))
                vl--;
            snprintf(out, size, "%.*s", (int)vl, v);
            return true;
        }
        p += len + (eol ? 1 : 0);
    }
    if (size)
        out[0] = '\0';
    return false;
}

/* Appends one exchange to $THAWD_RESPONSE_LOG (JSON Lines) for the OpenAPI validator:
 * method, path (query removed), status, content type and the body when it is text. One
 * write(2) per line on an O_APPEND descriptor, so parallel tests do not interleave. */
static void record_exchange(const char *method, const char *path, const th_resp *r, bool in_file)
{
    const char *log = getenv("THAWD_RESPONSE_LOG");
    if (!log || !*log || r->status == 0)
        return;
    char p[1024];
    snprintf(p, sizeof p, "%s", path);
    p[strcspn(p, "?")] = '\0';
    json_t *o = json_pack("{s:s, s:s, s:i, s:s}", "method", method, "path", p, "status",
                          (int)r->status, "content_type", r->content_type);
    bool text = !in_file && r->body &&
                (strstr(r->content_type, "json") || strstr(r->content_type, "text/") ||
                 strstr(r->content_type, "yaml") || strstr(r->content_type, "svg"));
    json_object_set_new(o, "body", text ? json_stringn(r->body, r->body_len) : json_null());
    char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!line)
        return;
    size_t n = strlen(line);
    line[n] = '\n'; /* replaces the NUL: write n + 1 bytes */
    int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) {
        if (write(fd, line, n + 1) != (ssize_t)(n + 1))
            diagf("could not record the response in %s", log);
        close(fd);
    }
    free(line);
}

static int do_request_ex(const th_daemon *d, const char *method, const char *path,
                         const char *const *headers, const char *content_type, const char *body,
                         size_t body_len, th_resp *r, FILE *out, int stop_after, long timeout_ms)
{
    memset(r, 0, sizeof(*r));
    char url[1024];
    snprintf(url, sizeof(url), "%s%s", d->base_url, path);
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    struct curl_slist *hdrs = NULL;
    char ct[256];
    if (content_type) {
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        hdrs = curl_slist_append(hdrs, ct);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    for (size_t i = 0; headers && headers[i]; i++)
        hdrs = curl_slist_append(hdrs, headers[i]);
    sink s = {.file = out, .stop_after = stop_after};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    if (timeout_ms > 0)
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    else
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else {
        if (strcmp(method, "POST") != 0)
            curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
        if (body || strcmp(method, "POST") == 0) {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, body ? body : "");
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? body_len : 0));
        }
    }
    CURLcode rc = curl_easy_perform(c);
    /* a stream read ends by our abort or by its time budget: both are normal */
    if ((rc == CURLE_WRITE_ERROR && s.stopped) ||
        (rc == CURLE_OPERATION_TIMEDOUT && timeout_ms > 0 && s.len > 0))
        rc = CURLE_OK;
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    } else {
        diagf("%s %s: %s", method, path, curl_easy_strerror(rc));
        r->status = 0;
    }
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    r->body = s.buf ? s.buf : strdup("");
    r->body_len = s.len;
    if (r->body && r->body_len > 0 && strstr(r->content_type, "json"))
        r->json = json_loadb(r->body, r->body_len, 0, NULL);
    record_exchange(method, path, r, out != NULL);
    return rc == CURLE_OK ? 0 : -1;
}

static int do_request(const th_daemon *d, const char *method, const char *path,
                      const char *content_type, const char *body, size_t body_len, th_resp *r,
                      FILE *out)
{
    return do_request_ex(d, method, path, NULL, content_type, body, body_len, r, out, 0, 0);
}

int th_request_ex(const th_daemon *d, const char *method, const char *path,
                  const char *const *headers, const char *content_type, const char *body,
                  size_t body_len, th_resp *r)
{
    return do_request_ex(d, method, path, headers, content_type, body, body_len, r, NULL, 0, 0);
}

int th_sse_read(const th_daemon *d, const char *path, const char *const *headers, int max_events,
                long timeout_ms, th_resp *r)
{
    const char *h[16];
    size_t n = 0;
    h[n++] = "Accept: text/event-stream";
    for (size_t i = 0; headers && headers[i] && n < 15; i++)
        h[n++] = headers[i];
    h[n] = NULL;
    return do_request_ex(d, "GET", path, h, NULL, NULL, 0, r, NULL, max_events, timeout_ms);
}

json_t *th_sse_parse(const char *text, int *n_comments)
{
    json_t *out = json_array();
    json_t *cur = NULL;
    if (n_comments)
        *n_comments = 0;
    for (const char *p = text; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len == 0) { /* blank line: dispatch */
            if (cur && json_object_get(cur, "data"))
                json_array_append(out, cur);
            json_decref(cur);
            cur = NULL;
        } else if (p[0] == ':') {
            if (n_comments)
                (*n_comments)++;
        } else {
            const char *colon = memchr(p, ':', len);
            size_t kl = colon ? (size_t)(colon - p) : len;
            const char *v = colon ? colon + 1 : p + len;
            if (v < p + len && *v == ' ')
                v++;
            size_t vl = (size_t)(p + len - v);
            if (!cur)
                cur = json_object();
            char key[16];
            snprintf(key, sizeof key, "%.*s", (int)(kl < 15 ? kl : 15), p);
            if (strcmp(key, "data") == 0) {
                json_t *dj = json_loadb(v, vl, 0, NULL);
                json_object_set_new(cur, "data", dj ? dj : json_stringn(v, vl));
            } else if (strcmp(key, "id") == 0 || strcmp(key, "event") == 0 ||
                       strcmp(key, "retry") == 0) {
                json_object_set_new(cur, key, json_stringn(v, vl));
            }
        }
        p = eol ? eol + 1 : NULL;
    }
    json_decref(cur); /* an unterminated record is not dispatched */
    return out;
}

int th_request(const th_daemon *d, const char *method, const char *path, const char *content_type,
               const char *body, size_t body_len, th_resp *r)
{
    return do_request(d, method, path, content_type, body, body_len, r, NULL);
}

int th_get(const th_daemon *d, const char *path, th_resp *r)
{
    return th_request(d, "GET", path, NULL, NULL, 0, r);
}

int th_post_json(const th_daemon *d, const char *path, const char *json_text, th_resp *r)
{
    return th_request(d, "POST", path, "application/json", json_text,
                      json_text ? strlen(json_text) : 0, r);
}

long th_download(const th_daemon *d, const char *path, const char *out_path, th_resp *r)
{
    FILE *f = fopen(out_path, "wb");
    if (!f) {
        diagf("fopen(%s): %s", out_path, strerror(errno));
        return -1;
    }
    int rc = do_request(d, "GET", path, NULL, NULL, 0, r, f);
    if (fclose(f) != 0 || rc != 0)
        return -1;
    return r->status;
}

void th_resp_fini(th_resp *r)
{
    free(r->body);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

/* ---- JSON helpers ---------------------------------------------------------------------- */

long long th_json_int(const json_t *obj, const char *key, long long dflt)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

const char *th_json_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

double th_json_num(const json_t *obj, const char *key, double dflt)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : dflt;
}

bool th_media_type_is(const char *content_type, const char *want)
{
    if (!content_type)
        return false;
    size_t n = strcspn(content_type, ";");
    while (n > 0 && isspace((unsigned char)content_type[n - 1]))
        n--;
    return n == strlen(want) && strncasecmp(content_type, want, n) == 0;
}

/* ---- jobs ------------------------------------------------------------------------------ */

long long th_job_submit(const th_daemon *d, const char *spec_json, th_resp *out)
{
    th_resp local;
    th_resp *r = out ? out : &local;
    long long id = -1;
    if (th_post_json(d, "/v1/jobs", spec_json, r) != 0)
        goto done;
    if (r->status != 201 || !json_is_object(r->json)) {
        diagf("submit: status %ld body %.300s", r->status, r->body ? r->body : "");
        goto done;
    }
    id = th_json_int(r->json, "id", -1);
    if (id <= 0)
        diagf("submit: no integer id in %.300s", r->body);
done:
    if (!out)
        th_resp_fini(&local);
    return id;
}

static bool state_in(const char *state, const char *states)
{
    if (!state)
        return false;
    size_t n = strlen(state);
    const char *p = states;
    while (*p) {
        size_t k = strcspn(p, "|");
        if (k == n && strncmp(p, state, n) == 0)
            return true;
        p += k;
        if (*p == '|')
            p++;
    }
    return false;
}

json_t *th_job_wait(const th_daemon *d, long long id, const char *states, double timeout_s,
                    th_watch *w)
{
    th_watch local = {0};
    if (!w)
        w = &local;
    char path[128];
    snprintf(path, sizeof(path), "/v1/jobs/%lld", id);
    double deadline = th_now() + timeout_s;
    const char *last = "?";
    char last_buf[32] = "";
    for (;;) {
        th_resp r;
        th_get(d, path, &r);
        w->polls++;
        if (r.status == 200 && json_is_object(r.json)) {
            const char *st = th_json_str(r.json, "state");
            if (st) {
                snprintf(last_buf, sizeof(last_buf), "%s", st);
                last = last_buf;
                if (strcmp(st, "queued") == 0)
                    w->saw_queued = true;
                if (strcmp(st, "running") == 0)
                    w->saw_running = true;
            }
            long long step = th_json_int(r.json, "step", -1);
            if (step > w->max_step)
                w->max_step = step;
            if (state_in(st, states)) {
                json_t *job = json_incref(r.json);
                th_resp_fini(&r);
                return job;
            }
        }
        th_resp_fini(&r);
        if (th_now() > deadline) {
            diagf("job %lld: not %s after %.0f s (last state %s)", id, states, timeout_s, last);
            return NULL;
        }
        th_sleep_ms(25);
    }
}

json_t *th_job_wait_step(const th_daemon *d, long long id, long long min_step, double timeout_s)
{
    char path[128];
    snprintf(path, sizeof(path), "/v1/jobs/%lld", id);
    double deadline = th_now() + timeout_s;
    for (;;) {
        th_resp r;
        th_get(d, path, &r);
        if (r.status == 200 && json_is_object(r.json)) {
            const char *st = th_json_str(r.json, "state");
            if (st && strcmp(st, "running") == 0 && th_json_int(r.json, "step", -1) >= min_step) {
                json_t *job = json_incref(r.json);
                th_resp_fini(&r);
                return job;
            }
            if (st && state_in(st, "succeeded|failed|cancelled")) {
                diagf("job %lld reached %s before running at step %lld", id, st, min_step);
                th_resp_fini(&r);
                return NULL;
            }
        }
        th_resp_fini(&r);
        if (th_now() > deadline) {
            diagf("job %lld: not running at step >= %lld after %.0f s", id, min_step, timeout_s);
            return NULL;
        }
        th_sleep_ms(20);
    }
}

json_t *th_job_events(const th_daemon *d, long long id)
{
    json_t *all = json_array();
    long long after = 0;
    for (int page = 0; page < 1000; page++) {
        char path[160];
        if (after > 0)
            snprintf(path, sizeof(path), "/v1/jobs/%lld/events?limit=1000&after=%lld", id, after);
        else
            snprintf(path, sizeof(path), "/v1/jobs/%lld/events?limit=1000", id);
        th_resp r;
        th_get(d, path, &r);
        json_t *data = json_object_get(r.json, "data");
        if (r.status != 200 || !json_is_array(data)) {
            diagf("GET %s: status %ld body %.200s", path, r.status, r.body ? r.body : "");
            th_resp_fini(&r);
            json_decref(all);
            return NULL;
        }
        size_t i;
        json_t *ev;
        json_array_foreach(data, i, ev)
        {
            json_array_append(all, ev);
            long long eid = th_json_int(ev, "id", 0);
            if (eid > after)
                after = eid;
        }
        bool more = json_is_true(json_object_get(r.json, "has_more"));
        size_t n = json_array_size(data);
        th_resp_fini(&r);
        if (!more || n == 0)
            return all;
    }
    return all;
}

/* True when `events` holds a "state" event that names a final state. */
static bool has_final_state_event(const json_t *events)
{
    size_t i;
    const json_t *ev;
    json_array_foreach(events, i, ev)
    {
        const char *t = th_json_str(ev, "type");
        if (!t || strcmp(t, "state") != 0)
            continue;
        char *txt = json_dumps(ev, 0);
        bool fin =
            txt && (strstr(txt, "succeeded") || strstr(txt, "failed") || strstr(txt, "cancelled"));
        free(txt);
        if (fin)
            return true;
    }
    return false;
}

json_t *th_job_events_final(const th_daemon *d, long long id, double timeout_s)
{
    double deadline = th_now() + timeout_s;
    bool first = true;
    for (;;) {
        json_t *events = th_job_events(d, id);
        if (!events || has_final_state_event(events))
            return events;
        if (first)
            diagf("job %lld: no final state event yet although the job is final", id);
        first = false;
        if (th_now() > deadline)
            return events;
        json_decref(events);
        th_sleep_ms(25);
    }
}

/* ---- problems -------------------------------------------------------------------------- */

bool th_is_problem(const th_resp *r, long status, const char *slug)
{
    bool good = true;
    if (r->status != status) {
        diagf("  status %ld, want %ld (body %.300s)", r->status, status, r->body ? r->body : "");
        good = false;
    }
    if (!th_media_type_is(r->content_type, "application/problem+json")) {
        diagf("  Content-Type \"%s\", want application/problem+json", r->content_type);
        good = false;
    }
    if (!json_is_object(r->json)) {
        diagf("  body is not a JSON object: %.300s", r->body ? r->body : "");
        return false;
    }
    char want_type[128];
    snprintf(want_type, sizeof(want_type), "urn:thawd:problem:%s", slug);
    const char *type = th_json_str(r->json, "type");
    if (!type || strcmp(type, want_type) != 0) {
        diagf("  type \"%s\", want \"%s\"", type ? type : "(none)", want_type);
        good = false;
    }
    const char *title = th_json_str(r->json, "title");
    if (!title || !*title) {
        diagf("  no title");
        good = false;
    }
    if (th_json_int(r->json, "status", -1) != r->status) {
        diagf("  status member %lld != HTTP status %ld", th_json_int(r->json, "status", -1),
              r->status);
        good = false;
    }
    return good;
}

bool th_problem_has_pointer(const th_resp *r, const char *pointer)
{
    const json_t *errs = json_object_get(r->json, "errors");
    size_t i;
    const json_t *e;
    json_array_foreach(errs, i, e)
    {
        const char *p = th_json_str(e, "pointer");
        const char *detail = th_json_str(e, "detail");
        size_t n = strlen(pointer);
        if (p && strncmp(p, pointer, n) == 0 && (p[n] == '\0' || p[n] == '/') && detail && *detail)
            return true;
    }
    diagf("  no errors[] entry with pointer \"%s\" (body %.400s)", pointer, r->body ? r->body : "");
    return false;
}

/* ---- SHA-256: the engine's (tested against the FIPS 180-4 vectors in test_engine_files) -- */

int th_sha256_file(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    eng_sha256 *h = eng_sha256_create();
    char *buf = malloc(65536);
    int rc = -1;
    if (f && h && buf) {
        size_t n;
        while ((n = fread(buf, 1, 65536, f)) > 0)
            eng_sha256_update(h, buf, n);
        if (!ferror(f)) {
            eng_sha256_final_hex(h, hex);
            rc = 0;
        }
    }
    if (f)
        fclose(f);
    eng_sha256_destroy(h);
    free(buf);
    return rc;
}

/* ---- safetensors ----------------------------------------------------------------------- */

static int dtype_size(const char *dt)
{
    static const struct {
        const char *name;
        int size;
    } table[] = {{"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
                 {"I32", 4}, {"I16", 2}, {"I8", 1},  {"U64", 8},  {"U32", 4},
                 {"U16", 2}, {"U8", 1},  {"BOOL", 1}};
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++)
        if (strcmp(dt, table[i].name) == 0)
            return table[i].size;
    return 0;
}

bool th_safetensors_valid(const char *path, size_t *n_tensors)
{
    size_t len = 0;
    char *buf = read_file(path, &len);
    bool good = false;
    json_t *hdr = NULL;
    *n_tensors = 0;
    if (!buf || len < 8) {
        diagf("  %s: missing or shorter than 8 bytes", path);
        goto out;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | (uint8_t)buf[i];
    if (hlen == 0 || hlen > len - 8) {
        diagf("  %s: header length %llu does not fit in %zu bytes", path, (unsigned long long)hlen,
              len);
        goto out;
    }
    json_error_t jerr;
    hdr = json_loadb(buf + 8, (size_t)hlen, 0, &jerr);
    if (!json_is_object(hdr)) {
        diagf("  %s: header is not a JSON object (%s)", path, jerr.text);
        goto out;
    }
    uint64_t data_len = len - 8 - hlen;
    const char *key;
    json_t *t;
    json_object_foreach(hdr, key, t)
    {
        if (strcmp(key, "__metadata__") == 0)
            continue;
        const char *dt = th_json_str(t, "dtype");
        const json_t *shape = json_object_get(t, "shape");
        const json_t *offs = json_object_get(t, "data_offsets");
        if (!dt || !dtype_size(dt) || !json_is_array(shape) || json_array_size(offs) != 2) {
            diagf("  %s: tensor %s lacks dtype/shape/data_offsets", path, key);
            goto out;
        }
        uint64_t elems = 1;
        size_t i;
        json_t *dim;
        json_array_foreach(shape, i, dim)
        {
            if (!json_is_integer(dim) || json_integer_value(dim) < 0) {
                diagf("  %s: tensor %s has a bad shape", path, key);
                goto out;
            }
            elems *= (uint64_t)json_integer_value(dim);
        }
        json_int_t b = json_integer_value(json_array_get(offs, 0));
        json_int_t e = json_integer_value(json_array_get(offs, 1));
        if (b < 0 || e < b || (uint64_t)e > data_len ||
            (uint64_t)(e - b) != elems * (uint64_t)dtype_size(dt)) {
            diagf("  %s: tensor %s offsets [%lld, %lld] do not fit (data %llu bytes)", path, key,
                  (long long)b, (long long)e, (unsigned long long)data_len);
            goto out;
        }
        (*n_tensors)++;
    }
    good = *n_tensors > 0;
    if (!good)
        diagf("  %s: no tensors", path);
out:
    json_decref(hdr);
    free(buf);
    return good;
}
