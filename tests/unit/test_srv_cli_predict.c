/* test_srv_cli_predict: `thawd predict` and `thawd summary` called as functions: a tiny
 * unsigned-byte IDX file through cnn-small's golden weights (JSON output parsed back),
 * malformed inputs and bad usage with their exit codes; an mlp written here read with
 * --hidden and with --spec (a job spec or job object: arch, sizes, normalisation), and
 * `thawd summary SPEC.json` (the spec's model, weights, batch and freezing). */
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

/* Writes an mlp 16 -> 8 -> 6 -> 3 as safetensors (PyTorch names: 0.0, 0.2 hidden Linear
 * layers, 1 the output) with small deterministic values. */
static void write_mlp(const char *path)
{
    static const struct {
        const char *name;
        int rows, cols; /* cols 0: a bias vector */
    } t[] = {{"0.0.weight", 8, 16}, {"0.0.bias", 8, 0}, {"0.2.weight", 6, 8},
             {"0.2.bias", 6, 0},    {"1.weight", 3, 6}, {"1.bias", 3, 0}};
    char hdr[1024];
    size_t off = 0, hn = (size_t)snprintf(hdr, sizeof hdr, "{");
    for (size_t i = 0; i < 6; i++) {
        size_t n = (size_t)t[i].rows * (size_t)(t[i].cols ? t[i].cols : 1);
        if (t[i].cols)
            hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn,
                                   "%s\"%s\":{\"dtype\":\"F32\",\"shape\":[%d,%d],"
                                   "\"data_offsets\":[%zu,%zu]}",
                                   i ? "," : "", t[i].name, t[i].rows, t[i].cols, off, off + 4 * n);
        else
            hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn,
                                   ",\"%s\":{\"dtype\":\"F32\",\"shape\":[%d],"
                                   "\"data_offsets\":[%zu,%zu]}",
                                   t[i].name, t[i].rows, off, off + 4 * n);
        off += 4 * n;
    }
    hn += (size_t)snprintf(hdr + hn, sizeof hdr - hn, "}");
    while (hn % 8)
        hdr[hn++] = ' ';
    FILE *f = fopen(path, "wb");
    unsigned char len[8] = {0};
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(hn >> (8 * i));
    fwrite(len, 1, 8, f);
    fwrite(hdr, 1, hn, f);
    for (size_t i = 0; i < off / 4; i++) {
        float v = (float)((int)(i * 7 % 13) - 6) / 20.0f;
        fwrite(&v, 4, 1, f);
    }
    fclose(f);
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* The "outputs" member of the JSON that out_path holds, as compact text (caller frees). */
static char *outputs_of_run(void)
{
    json_error_t je;
    json_t *j = json_load_file(out_path, 0, &je);
    char *txt = j ? json_dumps(json_object_get(j, "outputs"), JSON_COMPACT) : NULL;
    json_decref(j);
    return txt;
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

    /* an mlp: --hidden, and the same model from --spec */
    char mlp[] = "/tmp/thawd_predict_mlp_XXXXXX", spec[] = "/tmp/thawd_predict_spec_XXXXXX";
    char spec_text[2048];
    close(mkstemp(mlp));
    close(mkstemp(spec));
    write_mlp(mlp);
    unsigned char h4[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 4};
    write_idx(idx, h4, sizeof(h4), 2 * 16);
    char *m1[] = {"--arch", "mlp",      "--weights", mlp,      "--input", idx,     "--hidden",
                  "8,6",    "--format", "json",      "--mean", "0.5",     "--std", "0.25"};
    is_int(run(srv_cli_predict, 14, m1), 0, "predict --arch mlp --hidden 8,6 exits 0");
    j = json_load_file(out_path, 0, &je);
    ok(j && json_integer_value(json_object_get(j, "n")) == 2 &&
           json_integer_value(json_object_get(j, "classes")) == 3,
       "2 rows of 3 logits");
    json_decref(j);
    char *want = outputs_of_run();
    is_int(run(srv_cli_predict, 10, m1), 0, "the same without normalisation exits 0");
    char *plain = outputs_of_run();
    ok(want && plain && strcmp(want, plain) != 0, "--mean/--std change the logits");
    char *m2[] = {"--arch", "mlp", "--weights", mlp, "--input", idx};
    is_int(run(srv_cli_predict, 6, m2), 1, "without --hidden the default [64] does not fit: 1");
    char *m3[] = {"--arch", "mlp", "--weights", mlp, "--input", idx, "--hidden", "8,,6"};
    is_int(run(srv_cli_predict, 8, m3), 2, "a malformed --hidden is a usage error");
    char *m4[] = {"--arch", "cnn-small", "--weights", mlp, "--input", idx, "--hidden", "8"};
    is_int(run(srv_cli_predict, 8, m4), 2, "--hidden with a vision arch is a usage error");

    /* --spec: a registered-data spec (the daemon's normalised form) with explicit stats */
    write_text(spec, "{\"model\": {\"arch\": \"mlp\", \"hidden\": [8, 6], \"weights\": 3,"
                     " \"body_only\": false}, \"data\": {\"dataset\": 2, \"normalize\":"
                     " {\"mean\": [0.5], \"std\": [0.25]}}}");
    char *p1[] = {"--spec", spec, "--weights", mlp, "--input", idx, "--format", "json"};
    is_int(run(srv_cli_predict, 8, p1), 0, "predict --spec exits 0");
    char *got = outputs_of_run();
    ok(want && got && strcmp(want, got) == 0,
       "--spec gives the arch, hidden sizes and normalisation of --hidden 8,6 --mean --std");
    free(got);
    write_text(spec, "{\"object\": \"job\", \"id\": 4, \"spec\": {\"model\": {\"arch\": \"mlp\","
                     " \"hidden\": [8, 6]}, \"data\": {\"dataset\": \"d\", \"normalize\":"
                     " {\"mean\": [0.5], \"std\": [0.25]}}}}");
    is_int(run(srv_cli_predict, 8, p1), 0, "predict --spec with a job object exits 0");
    got = outputs_of_run();
    ok(want && got && strcmp(want, got) == 0, "the job object's spec is used");
    free(got);
    write_text(spec, "{\"model\": {\"arch\": \"mlp\", \"hidden\": [8, 6]},"
                     " \"data\": {\"dataset\": \"d\"}}");
    is_int(run(srv_cli_predict, 8, p1), 2,
           "a spec normalising with its dataset's statistics needs --mean/--std");
    char *p2[] = {"--spec",   spec,   "--weights", mlp,   "--input", idx,
                  "--format", "json", "--mean",    "0.5", "--std",   "0.25"};
    is_int(run(srv_cli_predict, 12, p2), 0, "with them it runs");
    got = outputs_of_run();
    ok(want && got && strcmp(want, got) == 0, "and --mean/--std are applied");
    free(got);
    write_text(spec, "{\"model\": {\"arch\": \"mlp\", \"hidden\": [0]}}");
    is_int(run(srv_cli_predict, 8, p1), 2, "a spec with a bad model is a usage error");
    write_text(spec, "{\"model\": ");
    is_int(run(srv_cli_predict, 8, p1), 2, "a spec that is not JSON is a usage error");
    char *p3[] = {"--spec", spec, "--arch", "cnn-small", "--weights", mlp, "--input", idx};
    write_text(spec, "{\"model\": {\"arch\": \"mlp\", \"hidden\": [8, 6]}}");
    is_int(run(srv_cli_predict, 8, p3), 2, "--arch other than the spec's is a usage error");
    free(want);
    free(plain);

    /* summary SPEC.json: the spec's model with its weights, batch and freezing */
    snprintf(spec_text, sizeof spec_text,
             "{\"model\": {\"arch\": \"mlp\", \"hidden\": [8, 6], \"weights\": \"%s\"},"
             " \"data\": {\"source\": \"synthetic\", \"features\": 16, \"classes\": 3},"
             " \"batch_size\": 5, \"stages\": [{\"op\": \"freeze\"}, {\"op\": \"fit\","
             " \"epochs\": 1}]}",
             mlp);
    write_text(spec, spec_text);
    char *q1[] = {spec, "--format", "json"};
    is_int(run(srv_cli_summary, 3, q1), 0, "summary SPEC.json exits 0");
    j = json_load_file(out_path, 0, &je);
    json_t *shape = json_object_get(j, "input_shape");
    ok(j && json_integer_value(json_array_get(shape, 0)) == 5 &&
           json_integer_value(json_array_get(shape, 1)) == 16 &&
           json_integer_value(json_object_get(j, "total_params")) ==
               16 * 8 + 8 + 8 * 6 + 6 + 6 * 3 + 3,
       "the spec's batch, input features and hidden sizes");
    ok(j && json_integer_value(json_object_get(j, "frozen_idx")) == 1,
       "frozen as its stages leave it");
    json_decref(j);
    char *q2[] = {spec, "--freeze", "0"};
    is_int(run(srv_cli_summary, 3, q2), 0, "summary SPEC.json --freeze 0 (text)");
    f = fopen(out_path, "r");
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    ok(strstr(buf, "Model unfrozen") && strstr(buf, "Total params: 211"),
       "the text: 211 parameters, unfrozen by --freeze");
    snprintf(spec_text, sizeof spec_text,
             "{\"model\": {\"arch\": \"mlp\", \"hidden\": [8, 7], \"weights\": \"%s\"},"
             " \"data\": {\"source\": \"synthetic\", \"features\": 16, \"classes\": 3}}",
             mlp);
    write_text(spec, spec_text);
    is_int(run(srv_cli_summary, 1, q1), 1, "weights that do not fit the spec's model exit 1");
    write_text(spec, "{\"model\": {\"arch\": \"cnn-small\"}, \"data\": {\"dataset\": \"x\"}}");
    is_int(run(srv_cli_summary, 1, q1), 2, "a registered dataset needs the daemon: 2");
    write_text(spec, "{\"model\": {\"arch\": \"cnn-small\"}, \"stages\": [{\"op\": \"nope\"}]}");
    is_int(run(srv_cli_summary, 1, q1), 2, "an invalid spec is a usage error");
    char *q3[] = {spec, "--arch", "mlp"};
    is_int(run(srv_cli_summary, 3, q3), 2, "SPEC.json with --arch is a usage error");
    char *q4[] = {"--format", "json"};
    is_int(run(srv_cli_summary, 2, q4), 2, "neither SPEC.json nor --arch is a usage error");
    char *q5[] = {"--arch", "mlp", "--hidden", "100,50", "--in-shape", "10", "--format", "json"};
    is_int(run(srv_cli_summary, 8, q5), 0, "summary --arch mlp --hidden 100,50");
    j = json_load_file(out_path, 0, &je);
    ok(j && json_integer_value(json_object_get(j, "total_params")) ==
                10 * 100 + 100 + 100 * 50 + 50 + 50 * 10 + 10,
       "its hidden sizes are used");
    json_decref(j);

    /* a local data directory (CSV: 3 features, 3 classes) gives the input shape and classes */
    char dir[] = "/tmp/thawd_predict_dir_XXXXXX", csv[64];
    if (mkdtemp(dir)) {
        snprintf(csv, sizeof csv, "%s/train.csv", dir);
        write_text(csv, "a,b,c,label\n1,2,3,x\n4,5,6,y\n7,8,9,z\n1,1,1,x\n");
        snprintf(spec_text, sizeof spec_text,
                 "{\"model\": {\"arch\": \"mlp\", \"hidden\": [4]},"
                 " \"data\": {\"path\": \"%s\", \"format\": \"csv\"}}",
                 dir);
        write_text(spec, spec_text);
    }
    is_int(run(srv_cli_summary, 3, q1), 0, "summary of a spec with local CSV data exits 0");
    j = json_load_file(out_path, 0, &je);
    json_t *layers = json_object_get(j, "layers");
    json_t *last = json_array_get(layers, json_array_size(layers) - 1);
    ok(j && json_integer_value(json_array_get(json_object_get(j, "input_shape"), 1)) == 3 &&
           json_integer_value(json_array_get(json_object_get(last, "output_shape"), 1)) == 3,
       "3 input features and 3 classes read from the directory");
    json_decref(j);
    unlink(csv);
    rmdir(dir);
    unlink(mlp);
    unlink(spec);
    unlink(idx);
    unlink(out_path);
    return done_testing();
}
