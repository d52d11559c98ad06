/* test_srv_cli_run: `thawd run` called as a function on a small synthetic mlp job
 * (lr_find, fit_one_cycle, save): the exit code, the per-epoch table on stdout, the saved
 * weights in --out DIR, and --timeline FILE read back line by line (every line a JSON
 * object, times that never go back, the events of each stage in order, the lr_find valley,
 * the artifact); then bad usage, a spec with an error and an unwritable timeline, each with
 * its exit code and a message naming the problem. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "cli_run.h"
#include "engine.h"
#include "tap.h"

static char dir[] = "/tmp/thawd_cli_run_XXXXXX";

/* Runs `thawd run` with argv, stdout to dir/stdout and stderr to dir/stderr; returns its
 * exit code. */
static int run(int argc, char **argv)
{
    char out[128], err[128];
    snprintf(out, sizeof out, "%s/stdout", dir);
    snprintf(err, sizeof err, "%s/stderr", dir);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    FILE *fo = fopen(out, "w"), *fe = fopen(err, "w");
    dup2(fileno(fo), 1);
    dup2(fileno(fe), 2);
    int rc = srv_cli_run(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    fclose(fo);
    fclose(fe);
    return rc;
}

/* The whole of dir/name as a string (caller frees), or NULL. */
static char *slurp(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void write_text(const char *name, const char *text)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static const char *str(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* Reads the timeline back and checks its structure against the spec's three stages. */
static void check_timeline(void)
{
    char *text = slurp("timeline.jsonl");
    ok(text != NULL, "the timeline file exists");
    if (!text)
        return;
    size_t lines = 0, bad = 0, backwards = 0, batches[3] = {0}, epochs = 0, lr_finds = 0;
    size_t begins = 0, ends = 0, artifacts = 0;
    int stage_open = -1, order_ok = 1;
    double last_t = 0, valley = 0;
    const char *first = "", *last = "";
    json_t *first_o = NULL, *last_o = NULL;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t e;
        json_t *o = json_loads(line, 0, &e);
        lines++;
        if (!json_is_object(o) || !json_is_number(json_object_get(o, "t"))) {
            bad++;
            json_decref(o);
            continue;
        }
        double t = json_number_value(json_object_get(o, "t"));
        backwards += t < last_t;
        last_t = t;
        const char *ev = str(o, "event");
        int stage = (int)json_integer_value(json_object_get(o, "stage"));
        if (!strcmp(ev, "stage_begin")) {
            order_ok &= stage_open == -1 && stage == (int)begins;
            stage_open = stage;
            begins++;
        } else if (!strcmp(ev, "stage_end")) {
            order_ok &= stage_open == stage;
            stage_open = -1;
            ends++;
        } else if (!strcmp(ev, "batch")) {
            order_ok &= stage_open == stage && stage >= 0 && stage < 3;
            if (stage >= 0 && stage < 3)
                batches[stage]++;
            order_ok &= json_is_number(json_object_get(o, "loss"));
        } else if (!strcmp(ev, "epoch")) {
            order_ok &= stage == 1;
            epochs++;
            double acc = json_number_value(json_object_get(o, "accuracy"));
            order_ok &= acc >= 0 && acc <= 1;
        } else if (!strcmp(ev, "lr_find")) {
            lr_finds++;
            valley = json_number_value(json_object_get(o, "valley"));
            order_ok &= json_integer_value(json_object_get(o, "points")) == 12;
        } else if (!strcmp(ev, "artifact")) {
            artifacts += !strcmp(str(o, "kind"), "weights") && stage == 2;
        }
        if (!first_o)
            first_o = json_incref(o);
        json_decref(last_o);
        last_o = json_incref(o);
        json_decref(o);
    }
    first = str(first_o, "event");
    last = str(last_o, "event");
    ok(lines > 10 && bad == 0, "%zu timeline lines, each a JSON object with a time", lines);
    is_int((int)backwards, 0, "times never go back");
    is_str(first, "run", "the first line is the run's start");
    is_int((int)json_integer_value(json_object_get(first_o, "stages")), 3, "... naming 3 stages");
    is_str(last, "end", "the last line is its end");
    is_str(str(last_o, "result"), eng_strerror(0), "... with the result");
    ok(begins == 3 && ends == 3 && order_ok, "three stages, events inside them in order");
    is_int((int)batches[0], 12, "lr_find: one batch line per iteration");
    is_int((int)batches[1], 2 * 8, "fit_one_cycle: 2 epochs of 8 batches");
    is_int((int)epochs, 2, "two epoch lines");
    ok(lr_finds == 1 && valley > 0, "the lr_find line carries the valley (%g)", valley);
    is_int((int)artifacts, 1, "the save stage's weights artifact");
    json_decref(first_o);
    json_decref(last_o);
    free(text);
}

int main(void)
{
    if (!mkdtemp(dir))
        return 1;
    write_text("job.json",
               "{\"model\":{\"arch\":\"mlp\",\"hidden\":[16]},"
               "\"data\":{\"source\":\"synthetic\",\"n_train\":512,\"n_valid\":64},"
               "\"batch_size\":64,"
               "\"stages\":[{\"op\":\"lr_find\",\"num_it\":12,\"end_lr\":0.1},"
               "{\"op\":\"fit_one_cycle\",\"epochs\":2,\"lr_max\":0.01},"
               "{\"op\":\"save\",\"name\":\"final\"}]}");
    char spec[128], out[128], timeline[128];
    snprintf(spec, sizeof spec, "%s/job.json", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(timeline, sizeof timeline, "%s/timeline.jsonl", dir);

    char *args[] = {spec, "--out", out, "--threads", "1", "--timeline", timeline};
    is_int(run(7, args), 0, "a small job runs to the end");
    char *stdout_text = slurp("stdout");
    ok(stdout_text && strstr(stdout_text, "train_loss") && strstr(stdout_text, "done"),
       "stdout has the per-epoch table and 'done'");
    free(stdout_text);
    char weights[160];
    snprintf(weights, sizeof weights, "%s/final.safetensors", out);
    struct stat sb;
    ok(stat(weights, &sb) == 0 && sb.st_size > 0, "the save stage wrote %s", weights);
    check_timeline();

    /* bad usage and bad input: exit 2 with a message naming the problem */
    char *no_spec[] = {"--out", out};
    is_int(run(2, no_spec), 2, "no spec: exit 2");
    char *bad_threads[] = {spec, "--threads", "0"};
    is_int(run(3, bad_threads), 2, "--threads 0: exit 2");
    char *err = slurp("stderr");
    ok(err && strstr(err, "--threads"), "... naming --threads");
    free(err);
    char *missing[] = {"/nonexistent/job.json"};
    is_int(run(1, missing), 2, "a missing spec file: exit 2");
    write_text("bad.json", "{\"model\":{\"arch\":\"mlp\"},\"data\":{\"source\":\"synthetic\"},"
                           "\"stages\":[{\"op\":\"fit\",\"epochs\":0}]}");
    char bad_spec[128];
    snprintf(bad_spec, sizeof bad_spec, "%s/bad.json", dir);
    char *bad_args[] = {bad_spec, "--out", out};
    is_int(run(3, bad_args), 2, "a spec with an error: exit 2");
    err = slurp("stderr");
    ok(err && strstr(err, "/stages/0/epochs"), "... naming the field");
    free(err);
    char *bad_timeline[] = {spec, "--out", out, "--timeline", "/nonexistent/dir/t.jsonl"};
    is_int(run(5, bad_timeline), 2, "an unwritable timeline: exit 2 before running");
    err = slurp("stderr");
    ok(err && strstr(err, "/nonexistent/dir/t.jsonl"), "... naming the file");
    free(err);

    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return done_testing();
}
