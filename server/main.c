/*
 * main.c: thawd's entry point: commands, configuration, start-up order, signals, shutdown.
 *
 * Start-up: parse config (defaults < THAWD_* env < argv) -> open the log -> block SIGINT and
 * SIGTERM (every thread created later inherits the mask) and install a handler that writes
 * them to a self-pipe (threads started before main, OpenBLAS's, may receive them) -> create
 * and lock the data dir -> recover jobs left running by a dead process ->
 * set the BLAS thread budget -> HTTP listening -> workers -> "ready".
 * Shutdown (on SIGINT/SIGTERM): flag -> stop HTTP -> interrupt and join workers (running jobs
 * are checkpointed and requeued) -> close storage -> unlock -> exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app.h"
#include "auth.h"
#include "build_config.h"
#include "cli_predict.h"
#include "cli_run.h"
#include "config.h"
#include "datasets.h"
#include "engine.h"
#include "files.h"
#include "git_version.h"
#include "http.h"
#include "log.h"
#include "workers.h"

extern char **environ;

/* Signals reach the main loop through a pipe. OpenBLAS starts its threads before main()
 * runs, with SIGINT/SIGTERM unblocked, so the kernel may deliver a signal to one of them:
 * with the default action (or sigwait in main) that thread would kill the process, as a
 * second SIGTERM during shutdown did. A handler that only writes to a pipe is safe on any
 * thread. */
static int signal_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
    int saved = errno;
    unsigned char b = (unsigned char)sig;
    if (write(signal_pipe[1], &b, 1) < 0) {
        /* The pipe is full: a shutdown is already pending, nothing to add. */
    }
    errno = saved;
}

/* Installs on_signal for SIGINT and SIGTERM. Returns 0, or -1 with errno set. */
static int install_signal_pipe(void)
{
    if (pipe(signal_pipe) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        int fl = fcntl(signal_pipe[i], F_GETFL);
        if (fl < 0 || fcntl(signal_pipe[i], F_SETFL, fl | O_NONBLOCK) != 0 ||
            fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC) != 0)
            return -1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return -1;
    return 0;
}

/* Blocks until SIGINT or SIGTERM arrives; returns which. Our own threads keep both
 * signals blocked (they inherited the mask), so main unblocks them for itself here. */
static int wait_for_signal(const sigset_t *sigs)
{
    if (pthread_sigmask(SIG_UNBLOCK, sigs, NULL) != 0)
        srv_log(SRV_LOG_WARN, "cannot unblock signals in main; relying on other threads");
    for (;;) {
        struct pollfd p = {.fd = signal_pipe[0], .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return SIGTERM; /* cannot wait any more: shut down rather than spin */
        unsigned char b;
        if (read(signal_pipe[0], &b, 1) == 1)
            return b;
    }
}

/* Creates and flocks DATA/thawd.lock. Returns the fd, or -1 after printing why. */
static int lock_data_dir(const srv_config *cfg)
{
    char path[SRV_CONFIG_STR_MAX + 16];
    snprintf(path, sizeof path, "%s/thawd.lock", cfg->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        fprintf(stderr, "thawd: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK)
            fprintf(stderr,
                    "thawd: another thawd is already running on data dir %s (%s is locked)\n",
                    cfg->data_dir, path);
        else
            fprintf(stderr, "thawd: cannot lock %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || write(fd, pid, (size_t)n) != n)
        srv_log(SRV_LOG_WARN, "cannot write the pid to %s", path);
    return fd;
}

static int serve(int argc, char **argv)
{
    srv_config cfg;
    char err[512];
    srv_config_defaults(&cfg);
    if (srv_config_parse(&cfg, argc, argv, environ, err, sizeof err) != 0) {
        fprintf(stderr, "thawd: %s\n", err);
        return 2;
    }
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1)
        cores = 1;
    int asked_blas = cfg.blas_threads;
    srv_config_finish(&cfg, (int)cores);
    if (srv_log_open(cfg.log_file, cfg.log_level) != 0) {
        fprintf(stderr, "thawd: --log-file %s: %s\n", cfg.log_file, strerror(errno));
        return 2;
    }
    srv_log_set_thread_name("main");
    if ((long)cfg.workers * cfg.blas_threads > cores) {
        int fit = (int)(cores / cfg.workers) > 0 ? (int)(cores / cfg.workers) : 1;
        if (asked_blas)
            srv_log(SRV_LOG_WARN,
                    "blas budget exceeded: workers=%d x blas_threads=%d > cores=%ld; using %d",
                    cfg.workers, cfg.blas_threads, cores, fit);
        cfg.blas_threads = fit;
    }

    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &sigs, NULL) != 0) {
        fprintf(stderr, "thawd: cannot block signals\n");
        return 1;
    }
    if (install_signal_pipe() != 0) {
        fprintf(stderr, "thawd: cannot install signal handlers: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    int status = 1, lock_fd = -1;
    srv_app app;
    srv_workers *workers = NULL;
    srv_http *http = NULL;
    bool app_ok = false;
    char dirs[SRV_CONFIG_STR_MAX + 16];
    snprintf(dirs, sizeof dirs, "%s/jobs", cfg.data_dir);
    if (srv_mkdir_p(cfg.data_dir) != 0 || srv_mkdir_p(dirs) != 0) {
        fprintf(stderr, "thawd: cannot create data dir %s: %s\n", cfg.data_dir, strerror(errno));
        goto done;
    }
    lock_fd = lock_data_dir(&cfg);
    if (lock_fd < 0)
        goto done;
    if (srv_app_init(&app, &cfg) != 0) {
        fprintf(stderr, "thawd: cannot create a thread key\n");
        goto done;
    }
    app_ok = true;

    char desc[1024];
    srv_config_describe(&cfg, desc, sizeof desc);
    srv_log(SRV_LOG_INFO, "thawd starting version=%s git=%s schema=%d %s", THAWD_VERSION,
            THAWD_GIT_DESCRIBE, store_schema_version(), desc);

    store *s = NULL;
    int rc = store_open(app.db_path, srv_log_store, NULL, &s);
    if (rc != 0) {
        srv_log(SRV_LOG_ERROR, "cannot open the database path=%s err=%s", app.db_path,
                store_strerror(rc));
        fprintf(stderr, "thawd: cannot open the database %s: %s\n", app.db_path,
                store_strerror(rc));
        goto done;
    }
    int auth_rc = srv_auth_startup_check(&cfg, s, err, sizeof err);
    if (auth_rc != 0) {
        store_close(s);
        srv_log(SRV_LOG_ERROR, "%s", err);
        if (cfg.log_file[0])
            fprintf(stderr, "thawd: %s\n", err);
        if (auth_rc > 0)
            status = 2; /* a usage problem: the operator must add a token or a flag */
        goto done;
    }
    int64_t requeued = 0;
    rc = store_job_recover(s, &requeued);
    store_close(s);
    if (rc != 0) {
        srv_log(SRV_LOG_ERROR, "job recovery failed err=%s", store_strerror(rc));
        goto done;
    }
    if (requeued)
        srv_log(SRV_LOG_WARN, "recovered jobs left running by a previous process requeued=%lld",
                (long long)requeued);

    int blas = eng_blas_set_threads(cfg.blas_threads);
    srv_log(SRV_LOG_INFO, "blas threads=%d info=\"%s\"", blas, eng_blas_info());

    srv_datasets_register_demo(&app); /* Fashion-MNIST on the first start that has it */
    srv_app_store_release(&app);
    if (srv_datasets_start(&app) != 0) /* also resumes datasets left processing */
        goto done;
    if (srv_workers_create(&app, cfg.workers, &workers) != 0) {
        srv_log(SRV_LOG_ERROR, "cannot create the worker pool");
        goto done;
    }
    app.workers = workers;
    if (srv_http_start(&app, &http, err, sizeof err) != 0) {
        srv_log(SRV_LOG_ERROR, "%s", err);
        if (cfg.log_file[0])
            fprintf(stderr, "thawd: %s\n", err);
        goto done;
    }
    if (srv_workers_start(workers) != 0)
        goto done;

    const char *host = cfg.host;
    bool v6 = strchr(host, ':') != NULL;
    srv_log(SRV_LOG_INFO, "ready url=http://%s%s%s:%u workers=%d blas_threads=%d", v6 ? "[" : "",
            host, v6 ? "]" : "", (unsigned)srv_http_port(http), cfg.workers, blas);

    int sig = wait_for_signal(&sigs);
    srv_log(SRV_LOG_INFO, "shutting down signal=%s", sig == SIGINT ? "SIGINT" : "SIGTERM");
    status = 0;

done:
    if (app_ok)
        atomic_store(&app.shutting_down, true);
    srv_http_stop(http); /* no new requests; joins the HTTP threads */
    if (app_ok)
        srv_datasets_stop(&app); /* unfinished datasets stay processing for the next start */
    srv_workers_stop(workers);   /* interrupts, checkpoints and requeues running jobs */
    if (app_ok)
        srv_app_fini(&app);
    if (lock_fd >= 0)
        close(lock_fd); /* releases the flock */
    srv_log(status == 0 ? SRV_LOG_INFO : SRV_LOG_ERROR, "stopped status=%d", status);
    srv_log_close();
    return status;
}

int main(int argc, char **argv)
{
    srv_log_set_thread_name("main");
    int first = 1;
    if (argc > 1 && strcmp(argv[1], "run") == 0)
        return srv_cli_run(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "predict") == 0)
        return srv_cli_predict(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "summary") == 0)
        return srv_cli_summary(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return srv_cli_token(argc - 2, argv + 2);
    if (argc > 1 && strcmp(argv[1], "serve") == 0)
        first = 2;
    for (int i = first; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            srv_config_print_help(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("thawd %s (%s)\n", THAWD_VERSION, THAWD_GIT_DESCRIBE);
            return 0;
        }
    }
    return serve(argc - first, argv + first);
}
