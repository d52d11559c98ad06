/*
 * data_images.c: image folders. The directory holds one sub-folder per class of PNG or JPEG
 * files, either directly or under train/ and test/ (or valid/, val/); a lone top-level
 * folder (how a tar of "pets/" unpacks) is descended into. Images are decoded with libpng
 * (simplified API) and libjpeg-turbo, converted to gray or RGB, resized bilinearly to H x W
 * and stored as C x H x W bytes.
 *
 * DESIGN: decoding is slow, so it happens once per (H, W, C): the result is written to the
 * compact cache <dir>/.cache-<H>x<W>x<C>.bin (header, class names, labels, pixels) through
 * a temp file and rename(), so concurrent jobs never see a half-written cache. Later loads
 * read the cache, whose size is checked against its header. A file that fails to decode,
 * including a truncated JPEG (libjpeg only warns and pads those), fails the whole read with
 * its path: a dataset is never silently partial. Files with other extensions are skipped.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* third-party; jpeglib.h needs stdio.h before it */
#include <jpeglib.h>
#include <png.h>

#include "data_read.h"
#include "util.h"

#define CACHE_MAGIC   "THWDIMC1"
#define MAX_IMAGE_DIM 16384
#define MAX_SIZE      4096 /* resize targets */

typedef struct img {
    uint32_t w, h, c; /* c: 1 gray or 3 RGB */
    uint8_t *px;      /* owned, h x w x c interleaved */
} img;

static bool has_ext(const char *name, const char *ext)
{
    size_t a = strlen(name), b = strlen(ext);
    return a > b && strcasecmp(name + a - b, ext) == 0;
}

static bool is_png(const char *name)
{
    return has_ext(name, ".png");
}

static bool is_jpeg(const char *name)
{
    return has_ext(name, ".jpg") || has_ext(name, ".jpeg");
}

/* ---- decoding ----------------------------------------------------------------------------- */

static int decode_png(const char *path, bool header_only, img *out, eng_error *err)
{
    png_image im;
    memset(&im, 0, sizeof im);
    im.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&im, path))
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: not a readable PNG: %s", path,
                           im.message);
    out->w = im.width;
    out->h = im.height;
    out->c = (im.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    if (out->w == 0 || out->h == 0 || out->w > MAX_IMAGE_DIM || out->h > MAX_IMAGE_DIM) {
        png_image_free(&im);
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: %ux%u pixels (limit %d per side)", path,
                           out->w, out->h, MAX_IMAGE_DIM);
    }
    if (header_only) {
        png_image_free(&im);
        return 0;
    }
    im.format = out->c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    out->px = calloc((size_t)out->w * out->h, out->c);
    if (!out->px) {
        png_image_free(&im);
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory decoding %s", path);
    }
    /* Alpha, if any, is composited onto the zeroed buffer (black). */
    if (!png_image_finish_read(&im, NULL, out->px, 0, NULL)) {
        free(out->px);
        out->px = NULL;
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: corrupt PNG: %s", path, im.message);
    }
    return 0;
}

typedef struct jerr {
    struct jpeg_error_mgr mgr;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
    bool warned;
} jerr;

static void jpeg_on_error(j_common_ptr ci)
{
    jerr *e = (jerr *)(void *)ci->err;
    (*ci->err->format_message)(ci, e->msg);
    longjmp(e->jb, 1);
}

static void jpeg_on_message(j_common_ptr ci, int level)
{
    jerr *e = (jerr *)(void *)ci->err;
    if (level < 0 && !e->warned) { /* a corrupt-data warning: treat it as an error */
        e->warned = true;
        (*ci->err->format_message)(ci, e->msg);
    }
}

static int decode_jpeg(const char *path, bool header_only, img *out, eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return eng_err_set(err, ENG_EIO, "data", "cannot open %s: %s", path, strerror(errno));
    struct jpeg_decompress_struct ci;
    jerr e;
    memset(&e, 0, sizeof e);
    ci.err = jpeg_std_error(&e.mgr);
    e.mgr.error_exit = jpeg_on_error;
    e.mgr.emit_message = jpeg_on_message;
    /* Everything that must survive the longjmp lives in memory that is not a local modified
     * after setjmp (out is the caller's). */
    out->px = NULL;
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&ci);
        fclose(f);
        free(out->px);
        out->px = NULL;
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: corrupt JPEG: %s", path, e.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_stdio_src(&ci, f);
    jpeg_read_header(&ci, TRUE);
    if (ci.image_width == 0 || ci.image_height == 0 || ci.image_width > MAX_IMAGE_DIM ||
        ci.image_height > MAX_IMAGE_DIM) {
        jpeg_destroy_decompress(&ci);
        fclose(f);
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: bad JPEG size %ux%u", path,
                           ci.image_width, ci.image_height);
    }
    out->w = ci.image_width;
    out->h = ci.image_height;
    out->c = ci.num_components == 1 ? 1 : 3;
    if (header_only) {
        jpeg_destroy_decompress(&ci);
        fclose(f);
        return 0;
    }
    ci.out_color_space = out->c == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_start_decompress(&ci);
    if (ci.output_components != (int)out->c || ci.output_width != out->w ||
        ci.output_height != out->h)
        longjmp(e.jb, 1);
    out->px = malloc((size_t)out->w * out->h * out->c);
    if (!out->px) {
        jpeg_destroy_decompress(&ci);
        fclose(f);
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory decoding %s", path);
    }
    while (ci.output_scanline < ci.output_height) {
        JSAMPROW row = out->px + (size_t)ci.output_scanline * out->w * out->c;
        jpeg_read_scanlines(&ci, &row, 1);
        if (e.warned)
            longjmp(e.jb, 1);
    }
    jpeg_finish_decompress(&ci);
    bool warned = e.warned;
    jpeg_destroy_decompress(&ci);
    fclose(f);
    if (warned) {
        free(out->px);
        out->px = NULL;
        return eng_err_set(err, ENG_EFORMAT, "data", "%s: corrupt JPEG: %s", path, e.msg);
    }
    return 0;
}

static int decode(const char *path, bool header_only, img *out, eng_error *err)
{
    memset(out, 0, sizeof(*out));
    return is_png(path) ? decode_png(path, header_only, out, err)
                        : decode_jpeg(path, header_only, out, err);
}

/* Resizes `in` bilinearly (half-pixel centres) to H x W and writes C x H x W bytes. */
static void resize_into(const img *in, size_t H, size_t W, size_t C, uint8_t *dst)
{
    float sy = (float)in->h / (float)H, sx = (float)in->w / (float)W;
    for (size_t y = 0; y < H; y++) {
        float fy = ((float)y + 0.5f) * sy - 0.5f;
        if (fy < 0)
            fy = 0;
        size_t y0 = (size_t)fy, y1 = y0 + 1 < in->h ? y0 + 1 : y0;
        float ty = fy - (float)y0;
        for (size_t x = 0; x < W; x++) {
            float fx = ((float)x + 0.5f) * sx - 0.5f;
            if (fx < 0)
                fx = 0;
            size_t x0 = (size_t)fx, x1 = x0 + 1 < in->w ? x0 + 1 : x0;
            float tx = fx - (float)x0;
            float v[3];
            for (size_t c = 0; c < in->c; c++) {
                const uint8_t *p = in->px;
                size_t ic = in->c;
                float a = p[(y0 * in->w + x0) * ic + c], b = p[(y0 * in->w + x1) * ic + c];
                float d = p[(y1 * in->w + x0) * ic + c], e = p[(y1 * in->w + x1) * ic + c];
                v[c] = (a + (b - a) * tx) * (1 - ty) + (d + (e - d) * tx) * ty;
            }
            if (in->c == 1)
                v[1] = v[2] = v[0];
            if (C == 1) {
                float g = in->c == 1 ? v[0] : 0.299f * v[0] + 0.587f * v[1] + 0.114f * v[2];
                dst[y * W + x] = (uint8_t)(g + 0.5f);
            } else {
                for (size_t c = 0; c < 3; c++)
                    dst[c * H * W + y * W + x] = (uint8_t)(v[c] + 0.5f);
            }
        }
    }
}

/* ---- layout ------------------------------------------------------------------------------- */

typedef struct listing {
    size_t n_classes;
    char **classes; /* owned, sorted training class names */
    size_t n[2];
    char **files[2]; /* owned, paths per split */
    int32_t *lab[2]; /* owned, label per file */
} listing;

static void listing_fini(listing *L)
{
    eng_names_free(L->classes, L->n_classes);
    for (int s = 0; s < 2; s++) {
        eng_names_free(L->files[s], L->n[s]);
        free(L->lab[s]);
    }
    memset(L, 0, sizeof(*L));
}

static int add_file(listing *L, int s, const char *path, int32_t label, eng_error *err)
{
    if (L->n[s] % 256 == 0) {
        char **f = realloc(L->files[s], (L->n[s] + 256) * sizeof(char *));
        if (f)
            L->files[s] = f;
        int32_t *l = f ? realloc(L->lab[s], (L->n[s] + 256) * sizeof(int32_t)) : NULL;
        if (!l)
            return eng_err_set(err, ENG_ENOMEM, "data", "out of memory listing images");
        L->lab[s] = l;
    }
    char *p = strdup(path);
    if (!p)
        return eng_err_set(err, ENG_ENOMEM, "data", "out of memory listing images");
    L->files[s][L->n[s]] = p;
    L->lab[s][L->n[s]++] = label;
    return 0;
}

/* Lists the class folders under `root` into split s. */
static int list_split(listing *L, int s, const char *root, eng_error *err)
{
    char **cls = NULL;
    size_t nc = 0;
    int rc = eng_list_dir(root, 'd', &cls, &nc, err);
    if (rc)
        return rc;
    if (s == 0) {
        if (nc < 2) {
            rc = eng_err_set(err, ENG_EFORMAT, "data",
                             "%s: %zu class folder(s); an image folder needs one sub-folder per "
                             "class and at least 2",
                             root, nc);
            goto out;
        }
        if (nc > ENG_MAX_CLASSES) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: %zu class folders (limit %d)", root, nc,
                             ENG_MAX_CLASSES);
            goto out;
        }
        L->classes = cls;
        L->n_classes = nc;
    }
    for (size_t k = 0; k < nc; k++) {
        int32_t label = -1;
        for (size_t j = 0; j < L->n_classes; j++)
            if (strcmp(L->classes[j], cls[k]) == 0)
                label = (int32_t)j;
        if (label < 0) {
            rc = eng_err_set(err, ENG_EFORMAT, "data",
                             "%s/%s: class '%s' of the test split is not a training class", root,
                             cls[k], cls[k]);
            goto out;
        }
        char sub[ENG_PATH_MAX];
        if (!eng_path_join(sub, sizeof sub, root, cls[k])) {
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: path too long", root);
            goto out;
        }
        char **files = NULL;
        size_t nf = 0, used = 0;
        if ((rc = eng_list_dir(sub, 'f', &files, &nf, err)))
            goto out;
        for (size_t i = 0; i < nf && !rc; i++) {
            if (!is_png(files[i]) && !is_jpeg(files[i]))
                continue;
            char path[ENG_PATH_MAX];
            rc = eng_path_join(path, sizeof path, sub, files[i])
                     ? add_file(L, s, path, label, err)
                     : eng_err_set(err, ENG_EFORMAT, "data", "%s: path too long", sub);
            used++;
        }
        eng_names_free(files, nf);
        if (!rc && used == 0 && s == 0)
            rc = eng_err_set(err, ENG_EFORMAT, "data", "%s: no .png, .jpg or .jpeg files", sub);
        if (rc)
            goto out;
    }
out:
    if (cls != L->classes)
        eng_names_free(cls, nc);
    return rc;
}

static int list_images(const char *dir, listing *L, eng_error *err)
{
    memset(L, 0, sizeof(*L));
    char root[ENG_PATH_MAX];
    snprintf(root, sizeof root, "%s", dir);
    int rc;
    for (int depth = 0;; depth++) {
        char **d = NULL;
        size_t nd = 0;
        if ((rc = eng_list_dir(root, 'd', &d, &nd, err)))
            return rc;
        bool descend = nd == 1 && depth < 2 && strcmp(d[0], "train") != 0;
        if (descend) {
            char next[ENG_PATH_MAX];
            if (!eng_path_join(next, sizeof next, root, d[0])) {
                eng_names_free(d, nd);
                return eng_err_set(err, ENG_EFORMAT, "data", "%s: path too long", root);
            }
            memcpy(root, next, sizeof root);
        }
        const char *test_name = NULL;
        bool has_train = false;
        for (size_t i = 0; i < nd; i++) {
            has_train |= strcmp(d[i], "train") == 0;
            if (!strcmp(d[i], "test") || !strcmp(d[i], "valid") || !strcmp(d[i], "val"))
                test_name = test_name ? test_name : d[i];
        }
        char sub[ENG_PATH_MAX];
        if (!descend && has_train) {
            rc = eng_path_join(sub, sizeof sub, root, "train")
                     ? list_split(L, 0, sub, err)
                     : eng_err_set(err, ENG_EFORMAT, "data", "%s: path too long", root);
            if (!rc && test_name)
                rc = eng_path_join(sub, sizeof sub, root, test_name)
                         ? list_split(L, 1, sub, err)
                         : eng_err_set(err, ENG_EFORMAT, "data", "%s: path too long", root);
            eng_names_free(d, nd);
            break;
        }
        eng_names_free(d, nd);
        if (!descend) {
            rc = list_split(L, 0, root, err);
            break;
        }
    }
    if (rc)
        listing_fini(L);
    return rc;
}

/* ---- cache -------------------------------------------------------------------------------- */

static void cache_path(const char *dir, size_t H, size_t W, size_t C, char *buf, size_t size)
{
    char name[96];
    snprintf(name, sizeof name, ".cache-%zux%zux%zu.bin", H, W, C);
    (void)eng_path_join(buf, size, dir, name); /* buf is ENG_PATH_MAX + 32: dir fits */
}

typedef struct cache_hdr {
    char magic[8];
    uint32_t C, H, W, n_classes;
    uint64_t n[2];
} cache_hdr;

static int cache_read(const char *path, size_t H, size_t W, size_t C, eng_rawdata *r,
                      eng_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return 1; /* no cache yet */
    cache_hdr h;
    int rc = 1;
    struct stat st;
    if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, CACHE_MAGIC, 8) != 0 || h.C != C ||
        h.H != H || h.W != W || h.n_classes < 2 || h.n_classes > ENG_MAX_CLASSES || h.n[0] == 0 ||
        h.n[0] > (1u << 30) || h.n[1] > (1u << 30) || fstat(fileno(f), &st) != 0)
        goto out;
    size_t in = C * H * W, total = (size_t)(h.n[0] + h.n[1]);
    size_t want = sizeof h + h.n_classes * ENG_CLASS_NAME_MAX + total * 4 + total * in;
    if ((size_t)st.st_size != want)
        goto out; /* stale or damaged: rebuilt by the caller */
    r->C = C;
    r->H = H;
    r->W = W;
    r->in_size = in;
    r->n_classes = h.n_classes;
    r->names = malloc(h.n_classes * sizeof(*r->names));
    if (!r->names) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    if (fread(r->names, ENG_CLASS_NAME_MAX, h.n_classes, f) != h.n_classes)
        goto out;
    for (size_t i = 0; i < h.n_classes; i++)
        r->names[i][ENG_CLASS_NAME_MAX - 1] = '\0';
    for (int s = 0; s < 2; s++)
        if (h.n[s] && (rc = eng_rawdata_alloc_split(r, s, (size_t)h.n[s], err)) != 0)
            goto out;
    rc = 1;
    for (int s = 0; s < 2; s++)
        if (h.n[s] && fread(r->split[s].y, 4, (size_t)h.n[s], f) != h.n[s])
            goto out;
    for (int s = 0; s < 2; s++)
        if (h.n[s] && fread(r->split[s].u8, in, (size_t)h.n[s], f) != h.n[s])
            goto out;
    for (int s = 0; s < 2; s++)
        for (size_t k = 0; k < r->split[s].n; k++)
            if (r->split[s].y[k] < 0 || (uint32_t)r->split[s].y[k] >= h.n_classes)
                goto out;
    rc = 0;
out:
    fclose(f);
    if (rc)
        eng_rawdata_fini(r);
    return rc;
}

static int cache_write(const char *path, const eng_rawdata *r, eng_error *err)
{
    char tmp[ENG_PATH_MAX + 48];
    if (!eng_path_join(tmp, sizeof tmp, path, "") || strlen(tmp) + 7 >= sizeof tmp)
        return eng_err_set(err, ENG_EIO, "data", "%s: path too long", path);
    tmp[strlen(tmp) - 1] = '\0'; /* drop the joined "/" */
    strcat(tmp, ".XXXXXX");
    int fd = mkstemp(tmp);
    if (fd < 0)
        return eng_err_set(err, ENG_EIO, "data", "cannot create %s: %s", tmp, strerror(errno));
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        unlink(tmp);
        return eng_err_set(err, ENG_EIO, "data", "cannot write %s: %s", tmp, strerror(errno));
    }
    cache_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, CACHE_MAGIC, 8);
    h.C = (uint32_t)r->C;
    h.H = (uint32_t)r->H;
    h.W = (uint32_t)r->W;
    h.n_classes = (uint32_t)r->n_classes;
    h.n[0] = r->split[0].n;
    h.n[1] = r->split[1].n;
    bool ok = fwrite(&h, sizeof h, 1, f) == 1 &&
              fwrite(r->names, ENG_CLASS_NAME_MAX, r->n_classes, f) == r->n_classes;
    /* An empty split has NULL buffers, and fwrite's pointer must not be NULL even for 0. */
    for (int s = 0; s < 2 && ok; s++)
        ok = r->split[s].n == 0 || fwrite(r->split[s].y, 4, r->split[s].n, f) == r->split[s].n;
    for (int s = 0; s < 2 && ok; s++)
        ok = r->split[s].n == 0 ||
             fwrite(r->split[s].u8, r->in_size, r->split[s].n, f) == r->split[s].n;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return eng_err_set(err, ENG_EIO, "data", "cannot write the image cache %s: %s", path,
                           strerror(e));
    }
    return 0;
}

/* ---- entry point -------------------------------------------------------------------------- */

int eng_read_images(const char *dir, uint32_t H, uint32_t W, uint32_t C, const eng_stopper *st,
                    eng_rawdata *out, eng_error *err)
{
    memset(out, 0, sizeof(*out));
    listing L;
    img im = {0};
    if (H > MAX_SIZE || W > MAX_SIZE || (C != 0 && C != 1 && C != 3))
        return eng_err_set(err, ENG_EINVAL, "data.image_size",
                           "image size must be 1..%d per side and channels 1 or 3", MAX_SIZE);
    char path[ENG_PATH_MAX + 32];
    if (H && W && C) {
        cache_path(dir, H, W, C, path, sizeof path);
        int rc = cache_read(path, H, W, C, out, err);
        if (rc <= 0)
            return rc;
    }
    int rc = list_images(dir, &L, err);
    if (rc)
        return rc;
    /* Unknown size or channels: the first image's size; RGB if any image has colour. */
    if (!H || !W || !C) {
        uint32_t any_color = 0;
        for (int s = 0; s < 2 && !rc; s++)
            for (size_t i = 0; i < L.n[s] && !rc; i++) {
                if ((rc = eng_stop_check(st, err)) || (rc = decode(L.files[s][i], true, &im, err)))
                    break;
                if (s == 0 && i == 0 && (!H || !W)) {
                    H = H ? H : (im.h > MAX_SIZE ? MAX_SIZE : im.h);
                    W = W ? W : (im.w > MAX_SIZE ? MAX_SIZE : im.w);
                }
                any_color |= im.c == 3;
            }
        if (rc)
            goto out;
        C = C ? C : (any_color ? 3 : 1);
        cache_path(dir, H, W, C, path, sizeof path);
        rc = cache_read(path, H, W, C, out, err);
        if (rc <= 0)
            goto out;
    }
    out->C = C;
    out->H = H;
    out->W = W;
    out->in_size = (size_t)C * H * W;
    out->n_classes = L.n_classes;
    out->names = malloc(L.n_classes * sizeof(*out->names));
    if (!out->names) {
        rc = eng_err_set(err, ENG_ENOMEM, "data", "out of memory");
        goto out;
    }
    for (size_t i = 0; i < L.n_classes; i++)
        snprintf(out->names[i], ENG_CLASS_NAME_MAX, "%s", L.classes[i]);
    for (int s = 0; s < 2; s++) {
        if (!L.n[s])
            continue;
        if ((rc = eng_rawdata_alloc_split(out, s, L.n[s], err)))
            goto out;
        for (size_t i = 0; i < L.n[s]; i++) {
            if ((rc = eng_stop_check(st, err)) || (rc = decode(L.files[s][i], false, &im, err)))
                goto out;
            resize_into(&im, H, W, C, out->split[s].u8 + i * out->in_size);
            free(im.px);
            im.px = NULL;
            out->split[s].y[i] = L.lab[s][i];
        }
    }
    rc = cache_write(path, out, err);
out:
    free(im.px);
    listing_fini(&L);
    if (rc)
        eng_rawdata_fini(out);
    return rc;
}
