/*
 * log.c: the leveled logger of log.h.
 *
 * DESIGN: the level is read atomically before formatting, so disabled debug lines cost one
 * load. A line is built in a stack buffer (time, level, thread name, message, newline) and
 * written with a single write(2) while holding sink_mu; a short write is retried so the
 * line stays whole. Lines longer than the buffer are truncated with "...".
 */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES 4096

static atomic_int sink_level = SRV_LOG_INFO;
/* sink_mu guards sink_fd and the act of writing a line to it. */
static pthread_mutex_t sink_mu = PTHREAD_MUTEX_INITIALIZER;
static int sink_fd = STDERR_FILENO;

static _Thread_local char thread_name[16];

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};

int srv_log_level_parse(const char *name, srv_log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (srv_log_level)i;
            return 0;
        }
    }
    return -1;
}

const char *srv_log_level_name(srv_log_level level)
{
    if ((int)level < 0 || (int)level > SRV_LOG_ERROR)
        return "?";
    return level_names[level];
}

int srv_log_open(const char *path, srv_log_level level)
{
    atomic_store(&sink_level, (int)level);
    if (!path || !*path)
        return 0;
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&sink_mu);
    sink_fd = fd;
    pthread_mutex_unlock(&sink_mu);
    return 0;
}

void srv_log_close(void)
{
    pthread_mutex_lock(&sink_mu);
    if (sink_fd != STDERR_FILENO) {
        (void)close(sink_fd); /* nothing useful to do on failure at exit */
        sink_fd = STDERR_FILENO;
    }
    pthread_mutex_unlock(&sink_mu);
}

bool srv_log_enabled(srv_log_level level)
{
    return (int)level >= atomic_load(&sink_level);
}

void srv_log_set_thread_name(const char *name)
{
    snprintf(thread_name, sizeof thread_name, "%s", name);
}

void srv_log_v(srv_log_level level, const char *fmt, va_list ap)
{
    if (!srv_log_enabled(level))
        return;
    if ((int)level < 0 || (int)level > SRV_LOG_ERROR)
        level = SRV_LOG_ERROR;

    char line[LINE_MAX_BYTES];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n =
        snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000L, level_tags[level], thread_name[0] ? thread_name : "http");
    if (n < 0)
        return;
    size_t len = (size_t)n;
    int m = vsnprintf(line + len, sizeof line - len - 1, fmt, ap);
    if (m < 0)
        return;
    if ((size_t)m >= sizeof line - len - 1) {
        len = sizeof line - 1 - 4;
        memcpy(line + len, "...", 3);
        len += 3;
    } else {
        len += (size_t)m;
    }
    line[len++] = '\n';

    pthread_mutex_lock(&sink_mu);
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(sink_fd, line + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break; /* a log that cannot be written is dropped, never fatal */
        }
        off += (size_t)w;
    }
    pthread_mutex_unlock(&sink_mu);
}

void srv_log(srv_log_level level, const char *fmt, ...)
{
    if (!srv_log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    srv_log_v(level, fmt, ap);
    va_end(ap);
}

void srv_log_store(store_log_level level, const char *msg, void *user)
{
    (void)user;
    srv_log_level lv = level == STORE_LOG_DEBUG  ? SRV_LOG_DEBUG
                       : level == STORE_LOG_INFO ? SRV_LOG_INFO
                       : level == STORE_LOG_WARN ? SRV_LOG_WARN
                                                 : SRV_LOG_ERROR;
    srv_log(lv, "%s", msg);
}
