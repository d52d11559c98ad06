/*
 * handlers_datasets.c: the dataset registry over HTTP: streamed upload, import from
 * --import-root, list, show, delete; the demo dataset; resolving "data": {"dataset": ...}.
 *
 * DESIGN: every new dataset goes through one path. A private staging directory
 * DATA/datasets/.tmp/stage-XXXXXX gets either the upload, streamed to the temp file .upload
 * while being hashed and fsync'd, or for an import only the marker .import naming the path
 * below the import root (checked, not copied: copying a big tree is no work for the HTTP
 * thread). Once that is there (and an upload's checksum matches), the HTTP thread renames
 * the staging directory to DATA/datasets/<token> (atomic), adds the row in state
 * "processing" (an import with size 0 for a directory and an all-zero sha256, as its bytes
 * are not read yet), wakes the processing thread and answers 202: it never copies, unpacks
 * or decodes. The processing thread (one, owned by the server, its own store connection)
 * copies an import (a tree into the directory, a file to .upload), records its size and
 * sha256 and removes .import; unpacks .upload (a tar, gzip'd or not, or a single file given
 * the name its reader expects), has the engine read and validate every file
 * (eng_dataset_inspect, which also writes an image folder's decode cache) and marks the row
 * "ready" with what the engine found, or "failed" with the reader's message after removing
 * the directory (so a failed dataset leaves no files or caches). Restart recovery is the
 * same loop: a row still "processing" is processed again, after removing whatever a
 * previous attempt copied beside .import or unpacked beside .upload; a copied directory
 * import has neither and is simply read again (the cache is written by rename, so it is
 * whole or absent). Shutdown does not wait for a dataset: the thread checks its stop flag
 * between tar entries and copied files (and every 64 KiB), and the engine asks it between
 * files and decoded images (eng_dataset_inspect_stoppable), so a stopped dataset is left
 * "processing" for that same recovery. A processing dataset cannot be deleted and jobs may
 * not name it. Anything that fails before the row exists removes its staging
 * directory, so nothing partial is registered. Import paths are resolved with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) from a descriptor of the import root (a
 * per-component O_NOFOLLOW walk where openat2 is missing), and tar entries may not be
 * absolute, contain "..", or be links. Lock order: only srv_dsproc.mu, never held across
 * storage or engine calls.
 */
/* nftw() is XSI */
#define _XOPEN_SOURCE 700

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "datasets.h"

#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#include "auth.h"
#include "files.h"
#include "log.h"
#include "models.h"

#define MAX_TAR_ENTRIES 200000
#define DEMO_NAME       "fashion-mnist"
#define UPLOAD_FILE     ".upload" /* hidden: tar extraction and the readers skip it */
/* An import not yet copied: holds the path below --import-root (hidden, like .upload). */
#define IMPORT_FILE ".import"
/* The sha256 of an import until its bytes are copied and hashed in the background. */
#define PENDING_SHA "0000000000000000000000000000000000000000000000000000000000000000"

static const char *const fmnist_files[4] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz"};
static const char *const fmnist_names[10] = {"T-shirt/top", "Trouser",   "Pullover", "Dress",
                                             "Coat",        "Sandal",    "Shirt",    "Sneaker",
                                             "Bag",         "Ankle boot"};

/* ---- small helpers ------------------------------------------------------------------------ */

static bool name_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n < 1 || n > 64 || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* Upload/import format names: the engine's ("images" among them) plus "images-tar", its
 * alias for an image folder sent as a tar. */
static int format_parse(const char *f, eng_data_kind *kind)
{
    if (f && strcmp(f, "images-tar") == 0) {
        *kind = ENG_DATA_IMAGES;
        return 0;
    }
    return f ? eng_data_kind_parse(f, kind) : -1;
}

static void datasets_dir(const srv_app *app, char *buf, size_t size, const char *sub)
{
    snprintf(buf, size, "%s/datasets%s%s", app->cfg->data_dir, sub ? "/" : "", sub ? sub : "");
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0)
        srv_log(SRV_LOG_WARN, "cannot remove path=%s err=%s", path, strerror(errno));
    return 0;
}

/* rm -rf without following symlinks. */
static void remove_tree(const char *path)
{
    if (path && path[0])
        (void)nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS); /* rm_entry logs failures */
}

/* Makes a fresh staging directory; 0 or -1. */
static int make_stage(const srv_app *app, char *stage, size_t size)
{
    char tmp[SRV_CONFIG_STR_MAX + 64];
    datasets_dir(app, tmp, sizeof tmp, ".tmp");
    if (srv_mkdir_p(tmp) != 0)
        return -1;
    if (snprintf(stage, size, "%s/stage-XXXXXX", tmp) >= (int)size)
        return -1;
    return mkdtemp(stage) ? 0 : -1;
}

/* Opens (creating parents) `rel` below dirfd for writing, never following symlinks. */
static int create_beneath(int dirfd, const char *rel)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", rel);
    int fd = dup(dirfd);
    char *save = NULL, *part = strtok_r(buf, "/", &save);
    while (part && fd >= 0) {
        char *next = strtok_r(NULL, "/", &save);
        int nfd;
        if (next) {
            if (mkdirat(fd, part, 0755) != 0 && errno != EEXIST) {
                close(fd);
                return -1;
            }
            nfd = openat(fd, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        } else {
            nfd = openat(fd, part, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        }
        close(fd);
        fd = nfd;
        part = next;
    }
    return fd;
}

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- tar ---------------------------------------------------------------------------------- */

static uint64_t octal(const char *p, size_t n, bool *ok)
{
    uint64_t v = 0;
    size_t i = 0;
    while (i < n && p[i] == ' ')
        i++;
    for (; i < n && p[i] >= '0' && p[i] <= '7'; i++)
        v = v * 8 + (uint64_t)(p[i] - '0');
    for (; i < n; i++)
        if (p[i] != ' ' && p[i] != '\0')
            *ok = false;
    return v;
}

/* Is `path` a tar archive (after gunzip)? */
static bool is_tar(const char *path)
{
    gzFile g = gzopen(path, "rb");
    if (!g)
        return false;
    char hdr[512];
    bool tar = gzread(g, hdr, 512) == 512 && memcmp(hdr + 257, "ustar", 5) == 0;
    gzclose(g);
    return tar;
}

/* is_tar of an open file (borrowed; read from its start through a duplicate). */
static bool is_tar_fd(int fd)
{
    int d = dup(fd);
    if (d < 0 || lseek(d, 0, SEEK_SET) != 0) {
        if (d >= 0)
            close(d);
        return false;
    }
    gzFile g = gzdopen(d, "rb");
    if (!g) {
        close(d);
        return false;
    }
    char hdr[512];
    bool tar = gzread(g, hdr, 512) == 512 && memcmp(hdr + 257, "ustar", 5) == 0;
    gzclose(g); /* closes d */
    return tar;
}

/* Entry names: relative, no "..", no empty parts; hidden parts are skipped by the caller. */
static int entry_name_check(const char *name, bool *skip)
{
    *skip = false;
    if (!name[0] || name[0] == '/')
        return -1;
    const char *p = name;
    while (*p) {
        size_t l = strcspn(p, "/");
        if (l == 2 && p[0] == '.' && p[1] == '.')
            return -1;
        if (l > 0 && p[0] == '.' && !(l == 1))
            *skip = true; /* hidden files, e.g. macOS ._ resource forks */
        p += l;
        while (*p == '/')
            p++;
    }
    return 0;
}

/* Unpacks a (possibly gzip'd) ustar/pax/GNU tar into dirfd. Returns 0, or -1 with msg set. */
/* Not an HTTP status: processing stopped because the server is shutting down; the dataset
 * stays "processing" and is processed again at the next start. */
#define ST_STOPPED 1u

static bool dsproc_stopping(srv_dsproc *p);

/* Unpacks the tar (gzip'd or not) at `path` below dirfd. Asks `stop` (NULL: never) before
 * each entry and each 64 KiB. 0, -1 with msg, or -2 when stopped (what was unpacked stays:
 * the next attempt clears it). */
static int untar(const char *path, int dirfd, uint64_t max_total, srv_dsproc *stop, char *msg,
                 size_t msz)
{
    gzFile g = gzopen(path, "rb");
    if (!g) {
        snprintf(msg, msz, "cannot read the upload");
        return -1;
    }
    char hdr[512], name[1024], longname[1024] = "";
    char *buf = malloc(65536);
    uint64_t total = 0;
    size_t entries = 0;
    int rc = -1;
    if (!buf) {
        snprintf(msg, msz, "out of memory");
        goto out;
    }
    for (;;) {
        if (stop && dsproc_stopping(stop)) {
            rc = -2;
            break;
        }
        int r = gzread(g, hdr, 512);
        if (r == 0) {
            rc = 0; /* end without the two zero blocks: accepted (many writers stop here) */
            break;
        }
        if (r != 512) {
            snprintf(msg, msz, "truncated tar archive (a partial header)");
            goto out;
        }
        bool zero = true;
        for (int i = 0; i < 512 && zero; i++)
            zero = hdr[i] == 0;
        if (zero) {
            rc = 0;
            break;
        }
        bool ok = true;
        uint64_t sum = 0;
        for (int i = 0; i < 512; i++)
            sum += (i >= 148 && i < 156) ? (uint64_t)' ' : (unsigned char)hdr[i];
        uint64_t want = octal(hdr + 148, 8, &ok);
        uint64_t size = octal(hdr + 124, 12, &ok);
        if (!ok || sum != want) {
            snprintf(msg, msz, "corrupt tar archive: bad header checksum at entry %zu", entries);
            goto out;
        }
        if (++entries > MAX_TAR_ENTRIES) {
            snprintf(msg, msz, "tar archive has more than %d entries", MAX_TAR_ENTRIES);
            goto out;
        }
        char type = hdr[156];
        if (longname[0]) {
            snprintf(name, sizeof name, "%s", longname);
            longname[0] = '\0';
        } else if (memcmp(hdr + 257, "ustar", 5) == 0 && hdr[345]) {
            snprintf(name, sizeof name, "%.155s/%.100s", hdr + 345, hdr);
        } else {
            snprintf(name, sizeof name, "%.100s", hdr);
        }
        uint64_t padded = (size + 511) / 512 * 512;
        if (type == 'L' || type == 'x') { /* GNU long name, or pax extended header */
            if (size >= 65536) {
                snprintf(msg, msz, "tar extended header too large");
                goto out;
            }
            if (gzread(g, buf, (unsigned)padded) != (int)padded) {
                snprintf(msg, msz, "truncated tar archive");
                goto out;
            }
            buf[size] = '\0';
            if (type == 'L') {
                snprintf(longname, sizeof longname, "%s", buf);
            } else { /* records "LEN key=value\n" */
                for (char *p = buf; p < buf + size;) {
                    char *end;
                    unsigned long len = strtoul(p, &end, 10);
                    if (len == 0 || p + len > buf + size || *end != ' ')
                        break;
                    if (strncmp(end + 1, "path=", 5) == 0) {
                        int vl = (int)(p + len - (end + 6) - 1);
                        snprintf(longname, sizeof longname, "%.*s", vl > 0 ? vl : 0, end + 6);
                    }
                    p += len;
                }
            }
            continue;
        }
        if (type == 'g') { /* pax global header: skip */
            if (gzseek(g, (z_off_t)padded, SEEK_CUR) < 0) {
                snprintf(msg, msz, "truncated tar archive");
                goto out;
            }
            continue;
        }
        while (strncmp(name, "./", 2) == 0)
            memmove(name, name + 2, strlen(name + 2) + 1);
        size_t nl = strlen(name);
        while (nl && name[nl - 1] == '/')
            name[--nl] = '\0';
        if (!name[0])
            continue;
        bool skip;
        if (entry_name_check(name, &skip) != 0) {
            snprintf(msg, msz, "tar entry '%.200s' escapes the archive (absolute or '..')", name);
            goto out;
        }
        if (type == '1' || type == '2') {
            snprintf(msg, msz, "tar entry '%.200s' is a link; links are not accepted", name);
            goto out;
        }
        if (type == '5') {
            continue; /* directories are created with their files */
        }
        if (type != '0' && type != '\0' && type != '7') {
            snprintf(msg, msz, "tar entry '%.200s' has type '%c'; only files and folders", name,
                     type);
            goto out;
        }
        total += size;
        if (total > max_total) {
            snprintf(msg, msz, "tar archive expands to more than %llu bytes",
                     (unsigned long long)max_total);
            goto out;
        }
        int fd = skip ? -1 : create_beneath(dirfd, name);
        if (!skip && fd < 0) {
            snprintf(msg, msz, "cannot create '%.200s' from the tar archive: %s", name,
                     strerror(errno));
            goto out;
        }
        uint64_t left = padded;
        while (left) {
            if (stop && dsproc_stopping(stop)) {
                if (fd >= 0)
                    close(fd);
                rc = -2;
                goto out;
            }
            unsigned chunk = left > 65536 ? 65536 : (unsigned)left;
            int got = gzread(g, buf, chunk);
            if (got != (int)chunk) {
                if (fd >= 0)
                    close(fd);
                snprintf(msg, msz, "truncated tar archive in entry '%.200s'", name);
                goto out;
            }
            uint64_t done = padded - left;
            size_t data = done >= size ? 0 : (size_t)(size - done < chunk ? size - done : chunk);
            if (fd >= 0 && data && write_all(fd, buf, data) != 0) {
                close(fd);
                snprintf(msg, msz, "cannot write '%.200s': %s", name, strerror(errno));
                goto out;
            }
            left -= chunk;
        }
        if (fd >= 0 && close(fd) != 0) {
            snprintf(msg, msz, "cannot write '%.200s': %s", name, strerror(errno));
            goto out;
        }
    }
out:
    free(buf);
    gzclose(g);
    return rc;
}

/* ---- registration (shared by upload, import and the demo) -------------------------------- */

static json_t *info_to_json(const eng_dataset_info *in, const char *const *names)
{
    json_t *o = json_object(), *cl = json_array(), *shape = json_array();
    json_t *mean = json_array(), *std = json_array();
    for (uint32_t i = 0; i < in->n_classes; i++) {
        json_t *c = json_object();
        json_object_set_new(c, "id", json_integer(i));
        json_object_set_new(c, "name", json_string(names ? names[i] : in->class_names[i]));
        json_object_set_new(c, "train", json_integer((json_int_t)in->train_counts[i]));
        json_object_set_new(c, "test", json_integer((json_int_t)in->test_counts[i]));
        json_array_append_new(cl, c);
    }
    for (int i = 0; i < 3; i++)
        json_array_append_new(shape, json_integer(in->shape[i]));
    for (uint32_t i = 0; i < in->n_stats; i++) {
        json_array_append_new(mean, json_real((double)in->mean[i]));
        json_array_append_new(std, json_real((double)in->std[i]));
    }
    json_t *stats = json_object();
    json_object_set_new(stats, "mean", mean);
    json_object_set_new(stats, "std", std);
    json_object_set_new(o, "n_train", json_integer((json_int_t)in->n_train));
    json_object_set_new(o, "n_test", json_integer((json_int_t)in->n_test));
    json_object_set_new(o, "shape", shape);
    json_object_set_new(o, "classes", cl);
    json_object_set_new(o, "stats", stats);
    return o;
}

static json_t *dataset_to_json(const store_dataset *d)
{
    json_t *o = json_object();
    char t[40];
    srv_time_format(d->created_at, t, sizeof t);
    json_object_set_new(o, "object", json_string("dataset"));
    json_object_set_new(o, "id", json_integer(d->id));
    json_object_set_new(o, "name", json_string(d->name));
    json_object_set_new(o, "format", json_string(d->format));
    json_object_set_new(o, "created_at", json_string(t));
    json_object_set_new(o, "size", json_integer(d->size));
    json_object_set_new(o, "sha256", json_string(d->sha256));
    json_object_set_new(o, "state", json_string(d->state ? d->state : "ready"));
    json_object_set_new(o, "error", d->error ? json_string(d->error) : json_null());
    json_t *info = json_loads(d->info_json, 0, NULL);
    if (info) {
        json_object_update(o, info);
        json_decref(info);
    }
    return o;
}

static bool dsproc_stop_fn(void *user)
{
    return dsproc_stopping(user);
}

/* Has the engine read and validate the dataset in `dir` (writing an image folder's decode
 * cache there), asking `stop` (NULL: never) between files and images. Returns 0 with
 * *info_text (caller frees with free()), ST_STOPPED, or an HTTP status (422 for the data,
 * 500 otherwise) with `msg`, which names files relative to `dir`. */
static unsigned inspect_dir(const char *dir, eng_data_kind kind, const char *format,
                            const char *const *class_names, srv_dsproc *stop, char **info_text,
                            char *msg, size_t msz)
{
    *info_text = NULL;
    eng_data_spec spec;
    eng_data_spec_defaults(&spec);
    spec.kind = kind;
    snprintf(spec.dir, sizeof spec.dir, "%s", dir);
    eng_dataset_info *info = NULL;
    eng_error err = {{0}, {0}};
    int rc = eng_dataset_inspect_stoppable(&spec, stop ? dsproc_stop_fn : NULL, stop, &info, &err);
    if (rc == ENG_ECANCELED && stop)
        return ST_STOPPED;
    if (rc) {
        /* messages name files by their full path: show them relative to the dataset */
        const char *t = err.text;
        size_t sl = strlen(dir);
        char clean[300];
        size_t o = 0;
        for (const char *p = t; *p && o + 1 < sizeof clean;) {
            if (strncmp(p, dir, sl) == 0) {
                p += sl;
                if (*p == '/')
                    p++;
                continue;
            }
            clean[o++] = *p++;
        }
        clean[o] = '\0';
        snprintf(msg, msz, "not a valid %s dataset: %s", format, clean);
        return rc == ENG_ENOMEM ? 500 : rc == ENG_EIO ? 500 : 422;
    }
    json_t *ij = info_to_json(info, class_names);
    eng_dataset_info_destroy(info);
    *info_text = ij ? json_dumps(ij, JSON_COMPACT) : NULL;
    json_decref(ij);
    if (!*info_text) {
        snprintf(msg, msz, "out of memory");
        return 500;
    }
    return 0;
}

/* The final directory of a new dataset: DATA/datasets/ds-<sha prefix>-<ms>. */
static void final_dir(const srv_app *app, const char *sha256, char *buf, size_t size)
{
    char token[64];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(token, sizeof token, "ds-%.12s-%lld%03ld", sha256, (long long)ts.tv_sec,
             ts.tv_nsec / 1000000);
    datasets_dir(app, buf, size, token);
}

/* Moves `stage` into place and adds the row, in state "ready" with info_text when it is
 * non-NULL (the demo, checked already), else "processing". On success fills *out (caller
 * frees with store_dataset_fini) and returns 0; otherwise returns an HTTP status with `msg`
 * and leaves `stage` for the caller to remove. */
static unsigned add_stage(srv_app *app, const char *stage, const char *name, const char *format,
                          uint64_t size, const char *sha256, const char *info_text,
                          store_dataset *out, char *msg, size_t msz)
{
    char final[SRV_CONFIG_STR_MAX + 96];
    final_dir(app, strcmp(sha256, PENDING_SHA) ? sha256 : "import", final, sizeof final);
    if (rename(stage, final) != 0) {
        snprintf(msg, msz, "cannot move the dataset into place: %s", strerror(errno));
        return 500;
    }
    store *s;
    int64_t id = 0;
    int src = srv_app_store(app, &s);
    if (src == 0)
        src =
            info_text
                ? store_dataset_add(s, name, format, final, (int64_t)size, sha256, info_text, &id)
                : store_dataset_add_processing(s, name, format, final, (int64_t)size, sha256, &id);
    if (src == 0)
        src = store_dataset_get(s, id, NULL, out);
    if (src != 0) {
        if (id == 0 && rename(final, stage) != 0) /* give the caller its directory back */
            remove_tree(final);
        snprintf(msg, msz, "%s",
                 src == STORE_ECONFLICT ? "a dataset with this name exists"
                                        : "the dataset could not be recorded");
        return src == STORE_ECONFLICT ? 409 : 500;
    }
    srv_log(SRV_LOG_INFO, "dataset %s id=%lld name=%s format=%s size=%llu",
            info_text ? "registered" : "accepted for processing", (long long)id, name, format,
            (unsigned long long)size);
    return 0;
}

/* Validates the staged dataset, moves it into place and adds the row as "ready" (the demo,
 * registered at start-up before the processing thread runs). As add_stage. */
static unsigned register_stage(srv_app *app, const char *stage, const char *name,
                               const char *format, eng_data_kind kind, uint64_t size,
                               const char *sha256, const char *const *class_names,
                               store_dataset *out, char *msg, size_t msz)
{
    char *info_text = NULL;
    unsigned st = inspect_dir(stage, kind, format, class_names, NULL, &info_text, msg, msz);
    if (st == 0)
        st = add_stage(app, stage, name, format, size, sha256, info_text, out, msg, msz);
    free(info_text);
    return st;
}

static void dsproc_kick(srv_app *app);

/* Moves `stage` (holding .upload, or an imported directory tree) into place as a
 * "processing" dataset and wakes the processing thread. As add_stage. */
static unsigned queue_stage(srv_app *app, const char *stage, const char *name, const char *format,
                            uint64_t size, const char *sha256, store_dataset *out, char *msg,
                            size_t msz)
{
    unsigned st = add_stage(app, stage, name, format, size, sha256, NULL, out, msg, msz);
    if (st == 0)
        dsproc_kick(app);
    return st;
}

/* The name a single (non-tar) file of this format is given, or NULL when the format has
 * several files and must come as a tar. */
static const char *single_file_name(eng_data_kind kind)
{
    if (kind == ENG_DATA_CSV)
        return "train.csv";
    if (kind == ENG_DATA_CIFAR10)
        return "data_batch_1.bin";
    if (kind == ENG_DATA_CIFAR100)
        return "train.bin";
    return NULL;
}

/* The check of a single file that is cheap enough for the HTTP thread: a format with
 * several files must come as a tar. `file` is a path, or NULL to read the open file fd.
 * 0 or 422 with msg. */
static unsigned check_single_file(const char *file, int fd, const char *format, eng_data_kind kind,
                                  char *msg, size_t msz)
{
    if (single_file_name(kind) || (file ? is_tar(file) : is_tar_fd(fd)))
        return 0;
    snprintf(msg, msz,
             "a %s dataset has several files: send a tar archive (.tar or .tar.gz) of them",
             format);
    return 422;
}

/* Moves an uploaded or imported single file into the staging dir: a tar is unpacked
 * (asking `stop`, NULL: never), a plain file gets the name the format's reader expects.
 * Returns 0, ST_STOPPED or an HTTP status. */
static unsigned place_file(srv_app *app, const char *file, const char *stage, const char *format,
                           eng_data_kind kind, srv_dsproc *stop, char *msg, size_t msz)
{
    if (is_tar(file)) {
        int dfd = open(stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) {
            snprintf(msg, msz, "cannot open the staging directory");
            return 500;
        }
        uint64_t cap = (uint64_t)app->cfg->max_upload * 8;
        int rc = untar(file, dfd, cap, stop, msg, msz);
        close(dfd);
        return rc == -2 ? ST_STOPPED : rc ? 422 : 0;
    }
    const char *dest = single_file_name(kind);
    if (!dest) {
        snprintf(msg, msz,
                 "a %s dataset has several files: send a tar archive (.tar or .tar.gz) of them",
                 format);
        return 422;
    }
    char path[SRV_CONFIG_STR_MAX + 128];
    snprintf(path, sizeof path, "%s/%s", stage, dest);
    if (rename(file, path) != 0) {
        snprintf(msg, msz, "cannot move the upload: %s", strerror(errno));
        return 500;
    }
    return 0;
}

/* ---- the processing thread ---------------------------------------------------------------- */

struct srv_dsproc {
    srv_app *app;
    pthread_t thread;
    pthread_mutex_t mu; /* guards: kick, stop */
    pthread_cond_t cv;  /* "work queued" or "stop" (CLOCK_MONOTONIC timed waits) */
    bool kick, stop;
};

static void dsproc_kick(srv_app *app)
{
    srv_dsproc *p = app->dsproc;
    if (!p)
        return; /* not started (tests of the handlers alone): picked up at the next start */
    pthread_mutex_lock(&p->mu);
    p->kick = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static bool dsproc_stopping(srv_dsproc *p)
{
    pthread_mutex_lock(&p->mu);
    bool stop = p->stop;
    pthread_mutex_unlock(&p->mu);
    return stop;
}

/* Removes every entry of `dir` except `keep` (.upload or .import): what an interrupted
 * attempt unpacked or copied. */
static void clear_except(const char *dir, const char *keep)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char **names = NULL;
    size_t n = 0;
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, keep))
            continue;
        char **g = realloc(names, (n + 1) * sizeof *names);
        if (!g)
            break;
        names = g;
        if (!(names[n] = strdup(e->d_name)))
            break;
        n++;
    }
    closedir(d);
    for (size_t i = 0; i < n; i++) {
        char path[SRV_CONFIG_STR_MAX + 400];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        remove_tree(path);
        free(names[i]);
    }
    free(names);
}

static int open_beneath(int rootfd, const char *rel);
static int copy_tree(int sfd, int dfd, const char *rel, eng_sha256 *h, uint64_t *total,
                     uint64_t cap, srv_dsproc *stop, char *msg, size_t msz);
static int copy_file(int src, const char *dst, eng_sha256 *h, uint64_t *total, uint64_t cap,
                     srv_dsproc *stop);

/* The copy of an import, done here rather than on the HTTP thread: copies what dir/.import
 * names below --import-root (a directory's tree into dir, a file to dir/.upload), records
 * the size and sha256, then removes .import. A copy left by an interrupted attempt is
 * cleared first. Returns 0, ST_STOPPED, or a status with msg. */
static unsigned copy_import(srv_app *app, srv_dsproc *p, store *s, int64_t id, const char *dir,
                            const char *format, eng_data_kind kind, char *msg, size_t msz)
{
    char marker[SRV_CONFIG_STR_MAX + 128], rel[1024] = "", sha[65];
    snprintf(marker, sizeof marker, "%s/%s", dir, IMPORT_FILE);
    FILE *f = fopen(marker, "r");
    bool got = f && fgets(rel, sizeof rel, f) != NULL;
    if (f)
        fclose(f);
    rel[strcspn(rel, "\n")] = '\0';
    if (!got || !rel[0]) {
        snprintf(msg, msz, "cannot read the import's path");
        return 500;
    }
    clear_except(dir, IMPORT_FILE);
    unsigned st = 0;
    uint64_t total = 0, cap = (uint64_t)app->cfg->max_upload;
    eng_sha256 *h = eng_sha256_create();
    int root = app->cfg->import_root[0]
                   ? open(app->cfg->import_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
                   : -1;
    int src = root >= 0 ? open_beneath(root, rel) : -1;
    struct stat sb;
    if (!h) {
        st = 500;
        snprintf(msg, msz, "out of memory");
    } else if (src < 0 || fstat(src, &sb) != 0) {
        st = 422;
        snprintf(msg, msz, "'%.200s' can no longer be opened below the import root", rel);
    } else if (S_ISDIR(sb.st_mode)) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int rc = dfd < 0 ? -1 : copy_tree(src, dfd, "", h, &total, cap, p, msg, msz);
        if (dfd < 0)
            snprintf(msg, msz, "cannot open the dataset directory");
        st = rc == -2 ? ST_STOPPED : rc ? 422 : 0;
        if (dfd >= 0)
            close(dfd);
    } else if (S_ISREG(sb.st_mode)) {
        char file[SRV_CONFIG_STR_MAX + 128];
        snprintf(file, sizeof file, "%s/%s", dir, UPLOAD_FILE);
        int rc = copy_file(src, file, h, &total, cap, p);
        st = rc == -2 ? ST_STOPPED : rc ? 422 : 0;
        if (rc == -3)
            snprintf(msg, msz, "the file is larger than --max-upload (%llu bytes)",
                     (unsigned long long)cap);
        else if (rc == -1)
            snprintf(msg, msz, "cannot copy the file");
        if (st == 0)
            st = check_single_file(file, -1, format, kind, msg, msz);
    } else {
        st = 422;
        snprintf(msg, msz, "'%.200s' is not a file or directory", rel);
    }
    if (st == 0) {
        eng_sha256_final_hex(h, sha);
        int rc = store_dataset_set_content(s, id, (int64_t)total, sha);
        if (rc) {
            st = 500;
            snprintf(msg, msz, "cannot record the import: %s", store_strerror(rc));
        } else if (unlink(marker) != 0) {
            st = 500;
            snprintf(msg, msz, "cannot remove the import marker: %s", strerror(errno));
        }
    }
    if (src >= 0)
        close(src);
    if (root >= 0)
        close(root);
    eng_sha256_destroy(h);
    return st;
}

/* Processes one "processing" dataset to "ready" or "failed", or leaves it "processing" when
 * p is asked to stop meanwhile. */
static void process_one(srv_app *app, srv_dsproc *p, store *s, int64_t id)
{
    store_dataset d;
    char msg[400] = "", upload[SRV_CONFIG_STR_MAX + 128];
    char *info_text = NULL;
    int rc = store_dataset_get(s, id, NULL, &d);
    if (rc) {
        srv_log(SRV_LOG_WARN, "dataset processing: cannot read id=%lld err=%s", (long long)id,
                store_strerror(rc));
        return;
    }
    if (!d.state || strcmp(d.state, "processing") != 0)
        goto out;
    srv_log(SRV_LOG_INFO, "dataset processing id=%lld name=%s format=%s", (long long)id, d.name,
            d.format);
    eng_data_kind kind;
    unsigned st = 0;
    if (format_parse(d.format, &kind) != 0) {
        st = 422;
        snprintf(msg, sizeof msg, "unknown format '%.32s'", d.format);
    }
    char marker[SRV_CONFIG_STR_MAX + 128];
    snprintf(marker, sizeof marker, "%s/%s", d.dir, IMPORT_FILE);
    if (st == 0 && access(marker, F_OK) == 0)
        st = copy_import(app, p, s, id, d.dir, d.format, kind, msg, sizeof msg);
    snprintf(upload, sizeof upload, "%s/%s", d.dir, UPLOAD_FILE);
    if (st == 0 && access(upload, F_OK) == 0) {
        clear_except(d.dir, UPLOAD_FILE);
        st = place_file(app, upload, d.dir, d.format, kind, p, msg, sizeof msg);
        if (st == 0 && unlink(upload) != 0 && errno != ENOENT) {
            st = 500;
            snprintf(msg, sizeof msg, "cannot remove the unpacked upload: %s", strerror(errno));
        }
    }
    if (st == 0)
        st = inspect_dir(d.dir, kind, d.format, NULL, p, &info_text, msg, sizeof msg);
    if (st == ST_STOPPED) {
        /* shutting down: the row stays "processing" and the next start does it again (it
         * clears what was unpacked beside .upload, or reads the unpacked files again) */
        srv_log(SRV_LOG_INFO, "dataset processing stopped id=%lld name=%s: shutting down",
                (long long)id, d.name);
        goto out;
    }
    if (st != 0)
        remove_tree(d.dir); /* a failed dataset keeps no files, caches or partial unpacking */
    rc = st == 0 ? store_dataset_finish(s, id, info_text, NULL)
                 : store_dataset_finish(s, id, NULL, msg[0] ? msg : "processing failed");
    if (rc)
        srv_log(SRV_LOG_ERROR, "dataset processing: cannot record the result id=%lld err=%s",
                (long long)id, store_strerror(rc));
    else if (st == 0)
        srv_log(SRV_LOG_INFO, "dataset ready id=%lld name=%s", (long long)id, d.name);
    else
        srv_log(SRV_LOG_WARN, "dataset failed id=%lld name=%s err=\"%s\"", (long long)id, d.name,
                msg);
out:
    free(info_text);
    store_dataset_fini(&d);
}

static void *dsproc_main(void *arg)
{
    srv_dsproc *p = arg;
    srv_app *app = p->app;
    srv_log_set_thread_name("datasets");
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (!p->kick && !p->stop) {
            struct timespec until;
            clock_gettime(CLOCK_MONOTONIC, &until);
            until.tv_sec += 30; /* safety net: a missed wake-up costs at most this */
            int w = pthread_cond_timedwait(&p->cv, &p->mu, &until);
            SRV_ASSERT(w == 0 || w == ETIMEDOUT);
        }
        bool stop = p->stop;
        p->kick = false;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        store *s;
        int64_t *ids = NULL;
        size_t n = 0;
        int rc = srv_app_store(app, &s);
        if (rc == 0)
            rc = store_dataset_list_processing(s, &ids, &n);
        if (rc) {
            srv_log(SRV_LOG_ERROR, "dataset processing: cannot list datasets err=%s",
                    store_strerror(rc));
            continue;
        }
        for (size_t i = 0; i < n && !dsproc_stopping(p); i++)
            process_one(app, p, s, ids[i]);
        free(ids);
    }
    return NULL; /* the thread's store connection is closed by the key's destructor */
}

int srv_datasets_start(srv_app *app)
{
    srv_dsproc *p = calloc(1, sizeof *p);
    pthread_condattr_t ca;
    bool mu = false, cv = false;
    if (!p)
        goto fail;
    p->app = app;
    p->kick = true; /* take up what a previous process left processing */
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto fail;
    mu = true;
    if (pthread_condattr_init(&ca) != 0)
        goto fail;
    int crc = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (crc == 0)
        crc = pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (crc != 0)
        goto fail;
    cv = true;
    if (pthread_create(&p->thread, NULL, dsproc_main, p) != 0)
        goto fail;
    app->dsproc = p;
    return 0;
fail:
    srv_log(SRV_LOG_ERROR, "cannot start the dataset-processing thread");
    if (cv)
        pthread_cond_destroy(&p->cv);
    if (mu)
        pthread_mutex_destroy(&p->mu);
    free(p);
    return -1;
}

void srv_datasets_stop(srv_app *app)
{
    srv_dsproc *p = app ? app->dsproc : NULL;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    int rc = pthread_join(p->thread, NULL);
    SRV_ASSERT(rc == 0);
    app->dsproc = NULL;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* ---- upload ------------------------------------------------------------------------------- */

struct srv_upload {
    srv_app *app;
    char name[65];
    char format[16];
    eng_data_kind kind;
    char want_sha[65];
    char stage[SRV_CONFIG_STR_MAX + 64];
    char file[SRV_CONFIG_STR_MAX + 96];
    int fd;
    uint64_t bytes;
    bool too_large, io_error, registered;
    eng_sha256 *hash;
    const srv_upload_kind *ukind; /* another registry's upload (models), or NULL */
    void *uctx;                   /* ukind's */
};

/* Other registries whose uploads stream through here. */
static const srv_upload_kind *const upload_kinds[] = {&srv_model_upload};

static const srv_upload_kind *kind_of(const char *path)
{
    for (size_t i = 0; i < sizeof upload_kinds / sizeof upload_kinds[0]; i++)
        if (strcmp(path, upload_kinds[i]->route) == 0)
            return upload_kinds[i];
    return NULL;
}

const char *srv_upload_route(const char *method, const char *path)
{
    if (strcmp(method, "POST") != 0)
        return NULL;
    if (strcmp(path, "/v1/datasets") == 0)
        return "/v1/datasets";
    const srv_upload_kind *k = kind_of(path);
    return k ? k->route : NULL;
}

static const char *hdr(srv_request *req, const char *name)
{
    return req->header ? req->header(req, name) : NULL;
}

/* The checks every upload shares (?sha256=, an announced Content-Length), then the temp
 * file. Takes ownership of `ctx` (kind's) even on failure. 0 or -1 with rep filled. */
static int upload_open(srv_request *req, const srv_upload_kind *kind, void *ctx, srv_upload **out,
                       srv_reply *rep);

static int upload_begin_kind(srv_request *req, const srv_upload_kind *kind, srv_upload **out,
                             srv_reply *rep)
{
    void *ctx = NULL;
    if (kind->begin(req, &ctx, rep) != 0)
        return -1;
    return upload_open(req, kind, ctx, out, rep);
}

int srv_upload_begin(srv_request *req, srv_upload **out, srv_reply *rep)
{
    *out = NULL;
    if (!srv_auth_check(req, SRV_ACCESS_SUBMIT, rep))
        return -1;
    const srv_upload_kind *uk = kind_of(req->path);
    if (uk)
        return upload_begin_kind(req, uk, out, rep);
    const char *format = req->query(req, "format");
    const char *ct = req->content_type;
    if (!format && ct) {
        if (!strncasecmp(ct, "text/csv", 8))
            format = "csv";
        else if (!strncasecmp(ct, "application/x-tar", 17))
            format = "images-tar";
    }
    eng_data_kind kind;
    if (!format || format_parse(format, &kind) != 0) {
        srv_reply_problem(
            rep, req, 422,
            "name the format with ?format=idx|cifar10|cifar100|csv|images|images-tar");
        return -1;
    }
    const char *name = req->query(req, "name");
    if (!name_ok(name)) {
        srv_reply_problem(rep, req, 422,
                          "?name= is required: 1..64 characters of [A-Za-z0-9._-], not "
                          "starting with '.'");
        return -1;
    }
    if (upload_open(req, NULL, NULL, out, rep) != 0)
        return -1;
    (*out)->kind = kind;
    snprintf((*out)->name, sizeof(*out)->name, "%s", name);
    snprintf((*out)->format, sizeof(*out)->format, "%s", format);
    return 0;
}

static int upload_open(srv_request *req, const srv_upload_kind *kind, void *ctx, srv_upload **out,
                       srv_reply *rep)
{
    srv_app *app = req->app;
    *out = NULL;
    const char *sha = req->query(req, "sha256");
    if (!sha)
        sha = hdr(req, "X-Content-SHA256");
    if (sha && (strlen(sha) != 64 || strspn(sha, "0123456789abcdefABCDEF") != 64)) {
        srv_reply_problem(rep, req, 422, "sha256 must be 64 hex digits");
        if (kind)
            kind->destroy(ctx);
        return -1;
    }
    const char *cl = hdr(req, "Content-Length");
    if (cl && strtoull(cl, NULL, 10) > app->cfg->max_upload) {
        char d[128];
        snprintf(d, sizeof d, "the upload is larger than --max-upload (%zu bytes)",
                 app->cfg->max_upload);
        srv_reply_problem(rep, req, 413, d);
        if (kind)
            kind->destroy(ctx);
        return -1;
    }
    store *s;
    store_dataset existing;
    const char *name = kind ? NULL : req->query(req, "name");
    if (name && srv_app_store(app, &s) == 0 && store_dataset_get(s, 0, name, &existing) == 0) {
        store_dataset_fini(&existing);
        srv_reply_problem(rep, req, 409, "a dataset with this name exists");
        return -1;
    }
    srv_upload *u = calloc(1, sizeof *u);
    if (!u || !(u->hash = eng_sha256_create())) {
        free(u);
        srv_reply_problem(rep, req, 500, "out of memory");
        if (kind)
            kind->destroy(ctx);
        return -1;
    }
    u->app = app;
    u->fd = -1;
    u->ukind = kind;
    u->uctx = ctx;
    if (sha)
        for (int i = 0; i < 65; i++)
            u->want_sha[i] = (char)(sha[i] >= 'A' && sha[i] <= 'F' ? sha[i] + 32 : sha[i]);
    if (make_stage(app, u->stage, sizeof u->stage) != 0) {
        srv_upload_destroy(u);
        srv_reply_problem(rep, req, 500, "cannot create the upload directory");
        return -1;
    }
    snprintf(u->file, sizeof u->file, "%s/%s", u->stage, UPLOAD_FILE);
    u->fd = open(u->file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (u->fd < 0) {
        srv_upload_destroy(u);
        srv_reply_problem(rep, req, 500, "cannot create the upload file");
        return -1;
    }
    *out = u;
    return 0;
}

void srv_upload_write(srv_upload *u, const char *data, size_t n)
{
    u->bytes += n;
    if (u->too_large || u->io_error)
        return;
    if (u->bytes > u->app->cfg->max_upload) {
        u->too_large = true; /* stop writing; the rest is counted and discarded */
        close(u->fd);
        u->fd = -1;
        unlink(u->file);
        return;
    }
    eng_sha256_update(u->hash, data, n);
    if (write_all(u->fd, data, n) != 0) {
        u->io_error = true;
        srv_log(SRV_LOG_ERROR, "dataset upload write failed err=%s", strerror(errno));
    }
}

void srv_upload_finish(srv_upload *u, srv_request *req, srv_reply *rep)
{
    char msg[400], sha[65];
    if (u->too_large) {
        snprintf(msg, sizeof msg, "the upload is larger than --max-upload (%zu bytes)",
                 u->app->cfg->max_upload);
        srv_reply_problem(rep, req, 413, msg);
        return;
    }
    if (u->io_error || fsync(u->fd) != 0 || close(u->fd) != 0) {
        u->fd = -1;
        srv_reply_problem(rep, req, 500, "the upload could not be written to disk");
        return;
    }
    u->fd = -1;
    if (u->bytes == 0) {
        srv_reply_problem(rep, req, 422, "the upload is empty");
        return;
    }
    if (u->ukind) {
        eng_sha256_final_hex(u->hash, sha);
        if (u->want_sha[0] && strcmp(sha, u->want_sha) != 0) {
            snprintf(msg, sizeof msg, "checksum mismatch: the body's sha256 is %s, expected %s",
                     sha, u->want_sha);
            srv_reply_problem(rep, req, 422, msg);
            return;
        }
        u->ukind->finish(u->uctx, u->file, u->bytes, sha, req, rep);
        return;
    }
    eng_sha256_final_hex(u->hash, sha);
    if (u->want_sha[0] && strcmp(sha, u->want_sha) != 0) {
        snprintf(msg, sizeof msg, "checksum mismatch: the body's sha256 is %s, expected %s", sha,
                 u->want_sha);
        srv_reply_problem(rep, req, 422, msg);
        return;
    }
    unsigned st = check_single_file(u->file, -1, u->format, u->kind, msg, sizeof msg);
    store_dataset d;
    if (st == 0)
        st = queue_stage(u->app, u->stage, u->name, u->format, u->bytes, sha, &d, msg, sizeof msg);
    if (st) {
        srv_reply_problem(rep, req, st, msg);
        return;
    }
    u->registered = true;
    srv_reply_json(rep, 202, dataset_to_json(&d));
    snprintf(rep->location, sizeof rep->location, "/v1/datasets/%lld", (long long)d.id);
    store_dataset_fini(&d);
}

void srv_upload_destroy(srv_upload *u)
{
    if (!u)
        return;
    if (u->fd >= 0)
        close(u->fd);
    if (u->ukind)
        u->ukind->destroy(u->uctx);
    if (!u->registered && u->stage[0])
        remove_tree(u->stage); /* registered: the stage was renamed away, nothing is left */
    eng_sha256_destroy(u->hash);
    free(u);
}

/* The route-table entry for POST /v1/datasets: http.c streams this route's body itself, so
 * reaching the handler means the body was buffered instead (a bug). */
void srv_handle_dataset_create(srv_request *req, srv_reply *rep)
{
    srv_reply_problem(rep, req, 500, "the upload was not streamed");
}

/* ---- import ------------------------------------------------------------------------------- */

/* Opens `rel` beneath rootfd without following symlinks or leaving the root. */
static int open_beneath(int rootfd, const char *rel)
{
#ifdef SYS_openat2
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
    how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
    long fd = syscall(SYS_openat2, rootfd, rel, &how, sizeof how);
    if (fd >= 0 || errno != ENOSYS)
        return (int)fd;
#endif
    /* Fallback: one component at a time, never following a link ('..' was refused). */
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", rel);
    int fd2 = dup(rootfd);
    char *save = NULL;
    for (char *p = strtok_r(buf, "/", &save); p && fd2 >= 0; p = strtok_r(NULL, "/", &save)) {
        int nfd = openat(fd2, p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        close(fd2);
        fd2 = nfd;
    }
    return fd2;
}

/* Copies directory sfd into dfd (both borrowed), hashing "relpath\0content" of each file
 * in sorted order. Symlinks and special files are refused. Asks `stop` (NULL: never) before
 * each entry and each 64 KiB. 0, -1 with msg, or -2 when stopped. */
static int copy_tree(int sfd, int dfd, const char *rel, eng_sha256 *h, uint64_t *total,
                     uint64_t cap, srv_dsproc *stop, char *msg, size_t msz)
{
    int dup_fd = dup(sfd);
    DIR *d = dup_fd >= 0 ? fdopendir(dup_fd) : NULL;
    if (!d) {
        if (dup_fd >= 0)
            close(dup_fd);
        snprintf(msg, msz, "cannot read directory '%s'", rel[0] ? rel : ".");
        return -1;
    }
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char **g = realloc(names, (n + 1) * sizeof *names);
        if (!g || !(g[n] = strdup(e->d_name))) {
            names = g ? g : names;
            rc = -1;
            snprintf(msg, msz, "out of memory");
            break;
        }
        names = g;
        n++;
    }
    closedir(d);
    for (size_t i = 0; i + 1 < n && !rc; i++) /* insertion sort: directories are small */
        for (size_t j = i + 1; j < n; j++)
            if (strcmp(names[j], names[i]) < 0) {
                char *t = names[i];
                names[i] = names[j];
                names[j] = t;
            }
    char *buf = rc ? NULL : malloc(65536);
    if (!rc && !buf) {
        rc = -1;
        snprintf(msg, msz, "out of memory");
    }
    for (size_t i = 0; i < n && !rc; i++) {
        char sub[1024];
        snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", names[i]);
        if (stop && dsproc_stopping(stop)) {
            rc = -2;
            break;
        }
        struct stat st;
        if (fstatat(sfd, names[i], &st, AT_SYMLINK_NOFOLLOW) != 0) {
            rc = -1;
            snprintf(msg, msz, "cannot stat '%.200s'", sub);
        } else if (S_ISLNK(st.st_mode)) {
            rc = -1;
            snprintf(msg, msz, "'%.200s' is a symbolic link; links are not followed", sub);
        } else if (S_ISDIR(st.st_mode)) {
            int cs = openat(sfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int cd = -1;
            if (cs >= 0 && mkdirat(dfd, names[i], 0755) == 0)
                cd = openat(dfd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cs < 0 || cd < 0) {
                rc = -1;
                snprintf(msg, msz, "cannot copy directory '%.200s'", sub);
            } else {
                rc = copy_tree(cs, cd, sub, h, total, cap, stop, msg, msz);
            }
            if (cs >= 0)
                close(cs);
            if (cd >= 0)
                close(cd);
        } else if (S_ISREG(st.st_mode)) {
            int in = openat(sfd, names[i], O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            int out =
                openat(dfd, names[i], O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
            eng_sha256_update(h, sub, strlen(sub) + 1);
            ssize_t r = 0;
            while (in >= 0 && out >= 0 && (r = read(in, buf, 65536)) > 0) {
                if (stop && dsproc_stopping(stop)) {
                    r = -3;
                    break;
                }
                *total += (uint64_t)r;
                if (*total > cap) {
                    r = -2;
                    break;
                }
                eng_sha256_update(h, buf, (size_t)r);
                if (write_all(out, buf, (size_t)r) != 0) {
                    r = -1;
                    break;
                }
            }
            if (in < 0 || out < 0 || r < 0) {
                rc = r == -3 ? -2 : -1;
                if (r == -2)
                    snprintf(msg, msz, "the import is larger than --max-upload (%llu bytes)",
                             (unsigned long long)cap);
                else
                    snprintf(msg, msz, "cannot copy '%.200s'", sub);
            }
            if (in >= 0)
                close(in);
            if (out >= 0 && close(out) != 0 && !rc) {
                rc = -1;
                snprintf(msg, msz, "cannot write '%.200s'", sub);
            }
        } else {
            rc = -1;
            snprintf(msg, msz, "'%.200s' is not a regular file or directory", sub);
        }
    }
    free(buf);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* Copies the open file src (borrowed, from its current offset) to a new file dst, hashing
 * its bytes into h and counting them in *total. Asks `stop` (NULL: never) every 64 KiB.
 * 0, -1 (I/O), -2 when stopped, -3 past `cap` bytes. */
static int copy_file(int src, const char *dst, eng_sha256 *h, uint64_t *total, uint64_t cap,
                     srv_dsproc *stop)
{
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    char *buf = malloc(65536);
    ssize_t r = out < 0 || !buf ? -1 : 0;
    while (r >= 0) {
        if (stop && dsproc_stopping(stop)) {
            r = -2;
            break;
        }
        if ((r = read(src, buf, 65536)) <= 0)
            break;
        *total += (uint64_t)r;
        if (*total > cap) {
            r = -3;
            break;
        }
        eng_sha256_update(h, buf, (size_t)r);
        if (write_all(out, buf, (size_t)r) != 0)
            r = -1;
    }
    free(buf);
    if (out >= 0 && close(out) != 0 && r == 0)
        r = -1;
    return r < 0 ? (int)r : 0;
}

static bool rel_path_ok(const char *p)
{
    if (!p || !p[0] || p[0] == '/' || strlen(p) > 900)
        return false;
    for (const char *s = p; *s;) {
        size_t l = strcspn(s, "/");
        if (l == 2 && s[0] == '.' && s[1] == '.')
            return false;
        s += l;
        while (*s == '/')
            s++;
    }
    return true;
}

void srv_handle_dataset_import(srv_request *req, srv_reply *rep)
{
    srv_app *app = req->app;
    char msg[400];
    if (!app->cfg->import_root[0]) {
        srv_reply_problem(rep, req, 403, "imports are disabled: the daemon has no --import-root");
        return;
    }
    json_error_t jerr;
    json_t *body =
        req->body ? json_loadb(req->body, req->body_len, JSON_REJECT_DUPLICATES, &jerr) : NULL;
    if (!json_is_object(body)) {
        json_decref(body);
        srv_reply_problem(rep, req, 400, "the body must be a JSON object");
        return;
    }
    const char *path = json_string_value(json_object_get(body, "path"));
    const char *format = json_string_value(json_object_get(body, "format"));
    const char *name = json_string_value(json_object_get(body, "name"));
    eng_data_kind kind;
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        if (strcmp(key, "path") && strcmp(key, "format") && strcmp(key, "name")) {
            snprintf(msg, sizeof msg, "unknown field '%.60s' (path, format, name)", key);
            srv_reply_problem(rep, req, 422, msg);
            json_decref(body);
            return;
        }
    }
    if (!rel_path_ok(path)) {
        srv_reply_problem(rep, req, 422,
                          "path must be a relative path below the import root, without '..'");
    } else if (!format || format_parse(format, &kind) != 0) {
        srv_reply_problem(rep, req, 422,
                          "format must be idx, cifar10, cifar100, csv, images or images-tar");
    } else if (!name_ok(name)) {
        srv_reply_problem(rep, req, 422,
                          "name must be 1..64 characters of [A-Za-z0-9._-], not starting "
                          "with '.'");
    } else {
        /* Only cheap checks here; the copy (and its hashing) is the processing thread's,
         * like an upload's unpacking (copy_import). */
        char stage[SRV_CONFIG_STR_MAX + 64] = "";
        unsigned st = 0;
        uint64_t size = 0;
        int root = open(app->cfg->import_root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int src = root >= 0 ? open_beneath(root, path) : -1;
        struct stat sb;
        if (root < 0) {
            st = 500;
            snprintf(msg, sizeof msg, "cannot open the import root");
        } else if (src < 0 || fstat(src, &sb) != 0) {
            st = errno == ENOENT ? 404 : 422;
            snprintf(msg, sizeof msg,
                     errno == ENOENT ? "'%.200s' does not exist below the import root"
                                     : "'%.200s' cannot be opened below the import root (links "
                                       "and paths leaving the root are refused)",
                     path);
        } else if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode)) {
            st = 422;
            snprintf(msg, sizeof msg, "'%.200s' is not a file or directory", path);
        } else if (S_ISREG(sb.st_mode) && (uint64_t)sb.st_size > app->cfg->max_upload) {
            st = 413;
            snprintf(msg, sizeof msg, "the file is larger than --max-upload");
        } else if (S_ISREG(sb.st_mode) &&
                   (st = check_single_file(NULL, src, format, kind, msg, sizeof msg)) != 0) {
            /* msg set */
        } else if (make_stage(app, stage, sizeof stage) != 0) {
            st = 500;
            snprintf(msg, sizeof msg, "cannot create a staging directory");
        } else {
            /* the marker the processing thread copies from (and a restart copies again) */
            char marker[SRV_CONFIG_STR_MAX + 96];
            snprintf(marker, sizeof marker, "%s/%s", stage, IMPORT_FILE);
            FILE *f = fopen(marker, "w");
            bool written = f && fprintf(f, "%s\n", path) > 0;
            written = (f && fclose(f) == 0) && written;
            if (!written) {
                st = 500;
                snprintf(msg, sizeof msg, "cannot write the import marker");
            }
            size = S_ISREG(sb.st_mode) ? (uint64_t)sb.st_size : 0;
        }
        store_dataset d;
        if (st == 0)
            st = queue_stage(app, stage, name, format, size, PENDING_SHA, &d, msg, sizeof msg);
        if (st) {
            srv_reply_problem(rep, req, st, msg);
            if (stage[0])
                remove_tree(stage);
        } else {
            srv_reply_json(rep, 202, dataset_to_json(&d));
            snprintf(rep->location, sizeof rep->location, "/v1/datasets/%lld", (long long)d.id);
            store_dataset_fini(&d);
        }
        if (src >= 0)
            close(src);
        if (root >= 0)
            close(root);
    }
    json_decref(body);
}

/* ---- list, show, delete ------------------------------------------------------------------- */

static bool parse_id(const char *s, int64_t *id)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v <= 0 || s[0] == '+' || s[0] == ' ')
        return false;
    *id = v;
    return true;
}

void srv_handle_dataset_list(srv_request *req, srv_reply *rep)
{
    store *s;
    store_dataset *arr = NULL;
    size_t n = 0;
    int rc = srv_app_store(req->app, &s);
    if (rc == 0)
        rc = store_dataset_list(s, &arr, &n);
    if (rc) {
        srv_reply_problem(rep, req, srv_status_for_store(rc), store_strerror(rc));
        return;
    }
    json_t *o = json_object(), *data = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(data, dataset_to_json(&arr[i]));
    store_dataset_list_free(arr, n);
    json_object_set_new(o, "object", json_string("list"));
    json_object_set_new(o, "data", data);
    json_object_set_new(o, "has_more", json_false());
    srv_reply_json(rep, 200, o);
}

void srv_handle_dataset_get(srv_request *req, srv_reply *rep)
{
    int64_t id;
    store *s;
    store_dataset d;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no such dataset");
        return;
    }
    int rc = srv_app_store(req->app, &s);
    if (rc == 0)
        rc = store_dataset_get(s, id, NULL, &d);
    if (rc) {
        srv_reply_problem(rep, req, srv_status_for_store(rc),
                          rc == STORE_ENOTFOUND ? "no such dataset" : store_strerror(rc));
        return;
    }
    srv_reply_json(rep, 200, dataset_to_json(&d));
    store_dataset_fini(&d);
}

void srv_handle_dataset_delete(srv_request *req, srv_reply *rep)
{
    int64_t id, users = 0;
    store *s;
    char *dir = NULL;
    if (!parse_id(req->params[0], &id)) {
        srv_reply_problem(rep, req, 404, "no such dataset");
        return;
    }
    int rc = srv_app_store(req->app, &s);
    if (rc == 0)
        rc = store_dataset_delete(s, id, &users, &dir);
    if (rc == STORE_ECONFLICT) {
        char msg[128];
        if (users == 0)
            snprintf(msg, sizeof msg,
                     "the dataset is still processing; delete it once it is ready or failed");
        else
            snprintf(msg, sizeof msg, "the dataset is used by %lld queued or running job(s)",
                     (long long)users);
        srv_reply_problem(rep, req, 409, msg);
        return;
    }
    if (rc) {
        srv_reply_problem(rep, req, srv_status_for_store(rc),
                          rc == STORE_ENOTFOUND ? "no such dataset" : store_strerror(rc));
        return;
    }
    remove_tree(dir);
    srv_log(SRV_LOG_INFO, "dataset deleted id=%lld", (long long)id);
    free(dir);
    rep->status = 204;
}

/* ---- resolver and demo -------------------------------------------------------------------- */

int srv_dataset_inspect_path(const char *path, const char *format, srv_dataset_ref *out, char *msg,
                             size_t msz)
{
    memset(out, 0, sizeof *out);
    eng_data_kind kind;
    if (!format || eng_data_kind_parse(format, &kind) != 0) {
        snprintf(msg, msz, "must be \"idx\", \"cifar10\", \"cifar100\", \"csv\" or \"images\"");
        return -2;
    }
    struct stat sb;
    if (!path || !path[0] || strlen(path) >= sizeof out->dir) {
        snprintf(msg, msz, "must be a directory path (at most %zu bytes)", sizeof out->dir - 1);
        return -1;
    }
    if (stat(path, &sb) != 0) {
        snprintf(msg, msz, "cannot read %.200s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(msg, msz,
                 "%.200s is not a directory: give the directory holding the dataset's files "
                 "(e.g. train.csv, data_batch_1.bin, one sub-folder per class)",
                 path);
        return -1;
    }
    char *info_text = NULL;
    if (inspect_dir(path, kind, format, NULL, NULL, &info_text, msg, msz) != 0)
        return -1;
    out->kind = kind;
    snprintf(out->dir, sizeof out->dir, "%s", path);
    out->info = json_loads(info_text, 0, NULL);
    free(info_text);
    if (!out->info) {
        snprintf(msg, msz, "out of memory");
        return -1;
    }
    return 0;
}

int srv_dataset_resolve(void *user, int64_t id, const char *name, srv_dataset_ref *out)
{
    srv_app *app = user;
    store *s;
    store_dataset d;
    memset(out, 0, sizeof *out);
    int rc = srv_app_store(app, &s);
    if (rc == 0)
        rc = store_dataset_get(s, id, name, &d);
    if (rc)
        return rc == STORE_ENOTFOUND ? -1 : -2;
    if (d.state && strcmp(d.state, "ready") != 0) {
        int not_ready = strcmp(d.state, "processing") == 0 ? -3 : -4;
        out->id = d.id;
        store_dataset_fini(&d);
        return not_ready;
    }
    int ret = -2;
    out->id = d.id;
    snprintf(out->dir, sizeof out->dir, "%s", d.dir);
    out->info = json_loads(d.info_json, 0, NULL);
    if (out->info && format_parse(d.format, &out->kind) == 0)
        ret = 0;
    store_dataset_fini(&d);
    if (ret) {
        json_decref(out->info);
        out->info = NULL;
    }
    return ret;
}

void srv_datasets_register_demo(srv_app *app)
{
    const char *src = app->fmnist_dir ? app->fmnist_dir : SRV_FASHION_MNIST_DIR;
    char marker[SRV_CONFIG_STR_MAX + 64], stage[SRV_CONFIG_STR_MAX + 64] = "", msg[400];
    datasets_dir(app, marker, sizeof marker, ".demo-registered");
    if (access(marker, F_OK) == 0)
        return;
    for (int i = 0; i < 4; i++) {
        char p[SRV_CONFIG_STR_MAX + 64];
        snprintf(p, sizeof p, "%s/%s", src, fmnist_files[i]);
        if (access(p, R_OK) != 0) {
            srv_log(SRV_LOG_INFO,
                    "demo dataset not registered: %s is missing (install "
                    "dataset-fashion-mnist)",
                    p);
            return;
        }
    }
    eng_sha256 *h = eng_sha256_create();
    uint64_t total = 0;
    int sfd = open(src, O_RDONLY | O_DIRECTORY | O_CLOEXEC), dfd = -1;
    if (!h || sfd < 0 || make_stage(app, stage, sizeof stage) != 0 ||
        (dfd = open(stage, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
        copy_tree(sfd, dfd, "", h, &total, UINT64_MAX, NULL, msg, sizeof msg) != 0) {
        srv_log(SRV_LOG_WARN, "demo dataset not registered: cannot copy %s", src);
        goto out;
    }
    char sha[65];
    eng_sha256_final_hex(h, sha);
    store_dataset d;
    unsigned st = register_stage(app, stage, DEMO_NAME, "idx", ENG_DATA_IDX_DIR, total, sha,
                                 fmnist_names, &d, msg, sizeof msg);
    if (st && st != 409) {
        srv_log(SRV_LOG_WARN, "demo dataset not registered: %s", msg);
        goto out;
    }
    if (st == 0) {
        srv_log(SRV_LOG_INFO, "demo dataset registered id=%lld name=%s", (long long)d.id,
                DEMO_NAME);
        store_dataset_fini(&d);
    }
    int m = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (m >= 0)
        close(m);
out:
    if (dfd >= 0)
        close(dfd);
    if (sfd >= 0)
        close(sfd);
    if (stage[0])
        remove_tree(stage);
    eng_sha256_destroy(h);
}
