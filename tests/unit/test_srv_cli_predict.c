/* test_srv_cli_predict: `thawd predict` and `thawd summary` called as functions: a tiny
 * unsigned-byte IDX file through cnn-small's golden weights (JSON output parsed back),
 * malformed inputs and bad usage with their exit codes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_predict.h"
#include "tap.h"

static char out_path[] = "/tmp/thawd_predict_out_XXXXXX";

/* Runs fn with stdout captured into out_path; returns its exit code. */
static int run(int (*fn)(int, char **), int argc, char **argv)
{
    fflush(stdout);
    int saved = dup(1);
    FILE *f = fopen(out_path, "w");
    dup2(fileno(f), 1);
    int rc = fn(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    fclose(f);
    return rc;
}

static void write_idx(const char *path, const unsigned char *hdr, size_t hn, size_t body)
{
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 1, hn, f);
    for (size_t i = 0; i < body; i++)
        fputc((int)(i * 37 % 256), f);
    fclose(f);
}

int main(void)
{
    const char *root = getenv("THAWD_SOURCE_ROOT");
    char weights[1024], idx[] = "/tmp/thawd_predict_in_XXXXXX";
    snprintf(weights, sizeof(weights), "%.900s/tests/data/arch/cnn_small.safetensors",
             root ? root : ".");
    close(mkstemp(out_path));
    close(mkstemp(idx));
    /* 3 images of 1 x 16 x 16 bytes */
    unsigned char hdr[] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 16, 0, 0, 0, 16};
    write_idx(idx, hdr, sizeof(hdr), 3 * 256);
    char *a1[] = {"--arch",   "cnn-small", "--weights", weights, "--input", idx,  "--probs",
                  "--format", "json",      "--mean",    "0.3",   "--std",   "0.4"};
    int rc = run(srv_cli_predict, 13, a1);
    is_int(rc, 0, "predict exits 0");
    json_error_t je;
    json_t *j = json_load_file(out_path, 0, &je);
    ok(j && json_integer_value(json_object_get(j, "n")) == 3 &&
           json_integer_value(json_object_get(j, "classes")) == 5 &&
           json_array_size(json_object_get(j, "outputs")) == 3,
       "JSON output: 3 rows of 5 class probabilities (class count from the weights)");
    double sum = 0;
    json_t *row = j ? json_array_get(json_object_get(j, "outputs"), 0) : NULL;
    for (size_t i = 0; i < json_array_size(row); i++)
        sum += json_real_value(json_array_get(row, i));
    is_near(sum, 1.0, 1e-5, "probabilities sum to 1");
    json_decref(j);

    char *a2[] = {"--arch", "cnn-small", "--weights", weights, "--input", idx};
    write_idx(idx, hdr, sizeof(hdr), 3 * 256 - 1);
    is_int(run(srv_cli_predict, 6, a2), 1, "a truncated IDX file exits 1");
    unsigned char bad[] = {0, 0, 9, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2};
    write_idx(idx, bad, sizeof(bad), 4);
    is_int(run(srv_cli_predict, 6, a2), 1, "an IDX type other than 0x08/0x0D exits 1");
    write_idx(idx, hdr, sizeof(hdr), 3 * 256);
    char *a3[] = {"--arch", "resnet18", "--weights", weights, "--input", idx};
    is_int(run(srv_cli_predict, 6, a3), 1, "weights of another architecture exit 1");
    char *a4[] = {"--arch", "cnn-small", "--input", idx};
    is_int(run(srv_cli_predict, 4, a4), 2, "missing --weights is a usage error");
    char *a5[] = {"--arch", "vgg", "--weights", weights, "--input", idx};
    is_int(run(srv_cli_predict, 6, a5), 2, "unknown --arch is a usage error");

    char *s1[] = {"--arch",     "resnet18", "--head",    "torchvision",
                  "--in-shape", "3x32x32",  "--classes", "1000"};
    is_int(run(srv_cli_summary, 8, s1), 0, "summary exits 0");
    FILE *f = fopen(out_path, "r");
    char buf[1 << 14];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    ok(strstr(buf, "Total params: 11,689,512") && strstr(buf, "Model unfrozen"),
       "summary text has the totals and the frozen state");
    char *s2[] = {"--arch", "cnn-small", "--format", "json", "--freeze", "-1"};
    is_int(run(srv_cli_summary, 6, s2), 0, "summary --format json");
    j = json_load_file(out_path, 0, &je);
    ok(j && json_integer_value(json_object_get(j, "frozen_idx")) == 2 &&
           json_integer_value(json_object_get(j, "total_params")) == 140458 &&
           json_array_size(json_object_get(j, "groups")) == 3,
       "summary JSON: totals, groups, frozen_idx");
    json_decref(j);
    unlink(idx);
    unlink(out_path);
    return done_testing();
}
