/*
 * test_engine_weights_check.c: eng_weights_check on the cnn-small golden weights (a full
 * fit with the input channels and class count it implies), a body-only fit (the fastai
 * head), the wrong architecture, and malformed files (named problems, never the path).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine.h"
#include "safetensors.h"
#include "tap.h"

static int check(const char *arch, eng_head_kind head, const char *path, eng_weights_info *info,
                 eng_error *err)
{
    eng_model_spec m;
    eng_model_spec_defaults(&m);
    snprintf(m.arch, sizeof m.arch, "%s", arch);
    m.head.kind = head;
    snprintf(m.weights, sizeof m.weights, "%s", path);
    return eng_weights_check(&m, info, err);
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

int main(void)
{
    const char *root = getenv("THAWD_SOURCE_ROOT");
    char golden[1024], tmp[64];
    snprintf(golden, sizeof golden, "%.900s/tests/data/arch/cnn_small.safetensors",
             root ? root : ".");
    eng_weights_info info;
    eng_error err;

    int rc = check("cnn-small", ENG_HEAD_DEFAULT, golden, &info, &err);
    is_int(rc, 0, "cnn-small golden weights fit cnn-small (%s)", err.text);
    is_int(info.fit, ENG_WEIGHTS_FIT_FULL, "as the whole model");
    is_int((long long)info.in_ndim, 3, "an image input");
    is_int((long long)info.in_shape[0], 1, "of one channel");
    is_int((long long)info.n_classes, 5, "five classes from 1.3.weight");
    ok(info.n_tensors > 32, "the tensor count is reported");

    rc = check("cnn-small", ENG_HEAD_FASTAI, golden, &info, &err);
    is_int(rc, 0, "with a fastai head the golden weights still fit (%s)", err.text);
    is_int(info.fit, ENG_WEIGHTS_FIT_BODY, "but only the body");
    is_int((long long)info.n_classes, 0, "a body fit has no class count");

    rc = check("resnet18", ENG_HEAD_DEFAULT, golden, &info, &err);
    is_int(rc, ENG_ESHAPE, "cnn-small weights do not fit resnet18");
    ok(strstr(err.text, "conv1.weight") != NULL, "the message names the missing tensor: %s",
       err.text);
    rc = check("mlp", ENG_HEAD_DEFAULT, golden, &info, &err);
    is_int(rc, ENG_ESHAPE, "nor an mlp");

    snprintf(tmp, sizeof tmp, "/tmp/thawd-wcheck-XXXXXX");
    int fd = mkstemp(tmp);
    ok(fd >= 0, "temp file");
    if (fd >= 0)
        close(fd);
    write_file(tmp, "not a safetensors file at all", 29);
    rc = check("cnn-small", ENG_HEAD_DEFAULT, tmp, &info, &err);
    is_int(rc, ENG_EFORMAT, "garbage is a format error");
    ok(strstr(err.text, tmp) == NULL && err.text[0], "the message does not show the path: %s",
       err.text);
    static const char hdr[] = "\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2]}   ";
    write_file(tmp, hdr, sizeof hdr - 1);
    rc = check("cnn-small", ENG_HEAD_DEFAULT, tmp, &info, &err);
    is_int(rc, ENG_EFORMAT, "a header with a bad tensor entry is a format error: %s", err.text);
    unlink(tmp);
    rc = check("cnn-small", ENG_HEAD_DEFAULT, tmp, &info, &err);
    is_int(rc, ENG_EIO, "a missing file is an I/O error");
    /* an mlp with dropout (body Linears at 0.0 and 0.3) and hidden sizes [32, 16] */
    static float vals[32 * 32];
    eng_st_tensor t[6] = {
        {"0.0.weight", 2, {32, 5}, vals},  {"0.0.bias", 1, {32}, vals},
        {"0.3.weight", 2, {16, 32}, vals}, {"0.3.bias", 1, {16}, vals},
        {"1.weight", 2, {3, 16}, vals},    {"1.bias", 1, {3}, vals},
    };
    is_int(eng_st_write(tmp, t, 6, NULL, 0, NULL, NULL, &err), 0, "write an mlp file");
    rc = check("mlp", ENG_HEAD_DEFAULT, tmp, &info, &err);
    is_int(rc, 0, "its layout is read from the file (%s)", err.text);
    ok(info.fit == ENG_WEIGHTS_FIT_FULL && info.in_ndim == 1 && info.in_shape[0] == 5 &&
           info.n_classes == 3,
       "a full fit for 5 features and 3 classes");
    t[2].shape[1] = 31;
    is_int(eng_st_write(tmp, t, 6, NULL, 0, NULL, NULL, &err), 0, "write a broken mlp file");
    rc = check("mlp", ENG_HEAD_DEFAULT, tmp, &info, &err);
    is_int(rc, ENG_ESHAPE, "mismatched layers fit neither the model nor its body");
    ok(strstr(err.text, "0.3.weight") != NULL, "the message names the tensor: %s", err.text);
    unlink(tmp);
    rc = check("no-such-arch", ENG_HEAD_DEFAULT, golden, &info, &err);
    is_int(rc, ENG_EINVAL, "an unknown architecture is refused");
    done_testing();
}
