/*
 * test_srv_json_io.c: job spec parsing (defaults, normalisation, every error with its JSON
 * pointer), API encoders, and the module-error -> HTTP status table.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json_io.h"
#include "tap.h"

static srv_spec spec;
static srv_spec_errors errs;

static int parse(const char *text)
{
    return srv_spec_parse_text(text, strlen(text), "/nonexistent-dir", &spec, &errs);
}

/* True when parsing fails with status 422 and some error has exactly `pointer`. */
static bool fails_at(const char *text, const char *pointer)
{
    if (parse(text) == 0) {
        srv_spec_fini(&spec);
        diag("  parsed but should not: %s", text);
        return false;
    }
    for (size_t i = 0; i < errs.n; i++)
        if (strcmp(errs.e[i].pointer, pointer) == 0)
            return errs.status == 422;
    for (size_t i = 0; i < errs.n; i++)
        diag("  got %s: %s", errs.e[i].pointer, errs.e[i].detail);
    return false;
}

static const char *detail_of(const char *pointer)
{
    for (size_t i = 0; i < errs.n; i++)
        if (strcmp(errs.e[i].pointer, pointer) == 0)
            return errs.e[i].detail;
    return "";
}

/* fine_tune stage, metrics, callbacks and non-finite floats (issue 4). */
static void check_workflow_fields(void)
{
    int rc = parse("{\"stages\":[{\"op\":\"fine_tune\",\"epochs\":3}]}");
    is_int(rc, 0, "fine_tune with defaults parses");
    if (rc == 0) {
        const eng_stage *s = &spec.stages[0];
        ok(s->op == ENG_STAGE_FINE_TUNE && s->epochs == 3 && s->freeze_epochs == 1 &&
               s->lr.kind == ENG_LR_VALUE && s->lr.v[0] == 2e-3f && s->lr_mult == 100.0f &&
               s->pct_start == 0.3f && s->div == 5.0f && s->div_final == 1e5f &&
               s->moms[1] == 0.85f,
           "fastai's fine_tune defaults filled");
        char *t = srv_spec_dump(&spec);
        ok(t && strstr(t, "\"op\":\"fine_tune\",\"epochs\":3,\"base_lr\":0.002,"
                          "\"freeze_epochs\":1,\"lr_mult\":100.0,\"pct_start\":0.3,\"div\":5.0"),
           "normalised fine_tune: %s", t ? t : "(null)");
        ok(t && strstr(t, "\"metrics\":[\"accuracy\"]") &&
               strstr(t, "\"callbacks\":{\"early_stopping\":null,\"save_best\":null,"
                         "\"terminate_on_nan\":true,\"grad_clip\":null}"),
           "default metrics and callbacks are normalised");
        free(t);
        srv_spec_fini(&spec);
    }
    ok(fails_at("{\"stages\":[{\"op\":\"fine_tune\"}]}", "/stages/0/epochs"),
       "fine_tune needs epochs");
    ok(fails_at("{\"stages\":[{\"op\":\"fine_tune\",\"epochs\":1,\"base_lr\":{\"slice\":[1e-3]}}]}",
                "/stages/0/base_lr"),
       "fine_tune base_lr is not a slice");
    ok(fails_at("{\"stages\":[{\"op\":\"fine_tune\",\"epochs\":1,\"freeze_epochs\":0}]}",
                "/stages/0/freeze_epochs"),
       "freeze_epochs >= 1");
    ok(fails_at("{\"stages\":[{\"op\":\"fine_tune\",\"epochs\":1,\"lr_max\":1}]}",
                "/stages/0/lr_max"),
       "fine_tune has no lr_max");
    rc = parse("{\"stages\":[{\"op\":\"lr_find\"},{\"op\":\"fine_tune\",\"epochs\":2,"
               "\"base_lr\":{\"suggestion\":\"valley\"},\"lr_mult\":10,\"wd\":0.1}]}");
    is_int(rc, 0, "fine_tune with a suggested base_lr parses");
    if (rc == 0) {
        ok(spec.stages[1].lr.kind == ENG_LR_SUGGESTION && spec.stages[1].lr_mult == 10.0f &&
               fabsf(spec.stages[1].wd - 0.1f) < 1e-7f,
           "suggestion, lr_mult and wd kept");
        srv_spec_fini(&spec);
    }

    rc = parse("{\"metrics\":[\"error_rate\",\"top_k_accuracy\",{\"name\":\"top_k_accuracy\","
               "\"k\":2}],\"callbacks\":{\"early_stopping\":{\"monitor\":\"error_rate\","
               "\"patience\":3,\"min_delta\":0.01},\"save_best\":true,"
               "\"terminate_on_nan\":false,\"grad_clip\":{\"norm_type\":\"inf\"}},"
               "\"stages\":[{\"op\":\"fit\",\"epochs\":1}]}");
    is_int(rc, 0, "metrics and callbacks parse");
    if (rc == 0) {
        const eng_job_spec *j = &spec.eng;
        ok(j->n_metrics == 3 && j->metrics[0].kind == ENG_METRIC_ERROR_RATE &&
               j->metrics[1].kind == ENG_METRIC_TOP_K && j->metrics[1].k == 5 &&
               j->metrics[2].k == 2,
           "three metrics");
        const eng_train_callbacks *c = &j->callbacks;
        ok(c->early_stopping.enabled && strcmp(c->early_stopping.monitor, "error_rate") == 0 &&
               c->early_stopping.patience == 3 && c->early_stopping.comp == 0 &&
               fabsf(c->early_stopping.min_delta - 0.01f) < 1e-9f,
           "early_stopping options");
        ok(c->save_best.enabled && strcmp(c->save_best.monitor, "valid_loss") == 0 &&
               strcmp(c->save_best.fname, "model") == 0,
           "save_best: true takes fastai's defaults (valid_loss, fname model)");
        ok(!c->terminate_on_nan && c->grad_clip && c->clip_max_norm == 1.0f &&
               isinf(c->clip_norm_type),
           "terminate_on_nan off; grad_clip max_norm 1, norm inf");
        char *t = srv_spec_dump(&spec);
        ok(t && strstr(t, "{\"name\":\"top_k_accuracy\",\"k\":2}") &&
               strstr(t, "\"norm_type\":\"inf\""),
           "normalised: %s", t ? t : "(null)");
        srv_spec_fini(&spec);
        ok(t && parse(t) == 0, "the normalised spec parses again");
        if (t && errs.n == 0)
            srv_spec_fini(&spec);
        free(t);
    }
    ok(fails_at("{\"metrics\":[\"f1\"]}", "/metrics/0"), "unknown metric");
    ok(fails_at("{\"metrics\":[{\"name\":\"accuracy\",\"k\":2}]}", "/metrics/0"),
       "k only for top-k");
    ok(fails_at("{\"callbacks\":{\"early_stopping\":{\"monitor\":\"accuracy\"}},"
                "\"metrics\":[\"error_rate\"]}",
                "/callbacks/early_stopping/monitor"),
       "the monitor must be a recorder column of this job");
    ok(fails_at("{\"callbacks\":{\"early_stopping\":{\"patience\":0}}}",
                "/callbacks/early_stopping/patience"),
       "patience >= 1");
    ok(fails_at("{\"callbacks\":{\"save_best\":{\"fname\":\"../x\"}}}",
                "/callbacks/save_best/fname"),
       "save_best fname is a plain name");
    ok(fails_at("{\"callbacks\":{\"grad_clip\":{\"max_norm\":0}}}",
                "/callbacks/grad_clip/max_norm"),
       "max_norm > 0");
    ok(fails_at("{\"callbacks\":{\"beep\":true}}", "/callbacks/beep"), "unknown callback");
    ok(fails_at("{\"callbacks\":{\"early_stopping\":{\"comp\":\"bigger\"}}}",
                "/callbacks/early_stopping/comp"),
       "comp is less or greater");

    json_t *v = srv_json_float((double)NAN);
    ok(json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0, "NaN -> \"NaN\"");
    json_decref(v);
    v = srv_json_float(-(double)INFINITY);
    ok(json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0,
       "-inf -> \"-Infinity\"");
    json_decref(v);
    v = srv_json_float(0.25);
    ok(json_is_real(v) && json_real_value(v) == 0.25, "finite -> number");
    json_decref(v);
}

static int no_dataset(void *user, int64_t id, const char *name, srv_dataset_ref *out)
{
    (void)user, (void)id, (void)name, (void)out;
    return -1;
}

/* "data": {"path", "format"}: local data for thawd run (no registry), refused by the daemon. */
static void check_local_data(void)
{
    char dir[] = "/tmp/thawd-json-io-XXXXXX", file[64], text[512];
    if (!mkdtemp(dir)) {
        ok(false, "mkdtemp");
        return;
    }
    snprintf(file, sizeof file, "%s/train.csv", dir);
    FILE *f = fopen(file, "w");
    fputs("a,b,label\n", f);
    for (int i = 0; i < 20; i++)
        fprintf(f, "%d,%d,%s\n", i % 2 * 3 + i % 5, i % 3, i % 2 ? "yes" : "no");
    fclose(f);
    snprintf(text, sizeof text,
             "{\"data\":{\"path\":\"%s\",\"format\":\"csv\",\"valid\":{\"pct\":0.25}},"
             "\"stages\":[{\"op\":\"fit\",\"epochs\":1}]}",
             dir);
    int rc = parse(text);
    is_int(rc, 0, "thawd run: a local CSV directory parses");
    if (rc == 0) {
        ok(spec.eng.data.kind == ENG_DATA_CSV && strcmp(spec.eng.data.dir, dir) == 0 &&
               spec.eng.data.valid_pct > 0.2f,
           "it maps to the CSV reader on that directory with the job's options");
        json_t *d = json_object_get(spec.normalized, "data");
        ok(strcmp(json_string_value(json_object_get(d, "path")), dir) == 0 &&
               !json_object_get(d, "dataset"),
           "the normalised spec keeps the path");
        srv_spec_fini(&spec);
    }
    snprintf(text, sizeof text, "{\"data\":{\"path\":\"%s\",\"format\":\"cifar10\"}}", dir);
    ok(fails_at(text, "/data/path") && strstr(detail_of("/data/path"), "cifar10"),
       "the wrong format -> the reader's message at /data/path: %s", detail_of("/data/path"));
    snprintf(text, sizeof text, "{\"data\":{\"path\":\"%s\",\"format\":\"png\"}}", dir);
    ok(fails_at(text, "/data/format"), "unknown format -> /data/format");
    snprintf(text, sizeof text, "{\"data\":{\"path\":\"%s\"}}", dir);
    ok(fails_at(text, "/data/format"), "path without format -> /data/format");
    ok(fails_at("{\"data\":{\"path\":\"/nonexistent-thawd\",\"format\":\"csv\"}}", "/data/path"),
       "a missing directory -> /data/path");
    ok(fails_at("{\"data\":{\"path\":\"/etc/hostname\",\"format\":\"csv\"}}", "/data/path") &&
           strstr(detail_of("/data/path"), "not a directory"),
       "a file -> /data/path (not a directory)");
    ok(fails_at("{\"data\":{\"dataset\":1,\"format\":\"csv\"}}", "/data/format"),
       "format with a registered dataset -> /data/format");
    /* the daemon (a registry resolver) never reads paths */
    snprintf(text, sizeof text, "{\"data\":{\"path\":\"%s\",\"format\":\"csv\"}}", dir);
    rc = srv_spec_parse_text_ex(text, strlen(text), NULL, no_dataset, NULL, &spec, &errs);
    bool at_path = false;
    for (size_t i = 0; rc != 0 && i < errs.n; i++)
        at_path |= strcmp(errs.e[i].pointer, "/data/path") == 0;
    ok(rc != 0 && errs.status == 422 && at_path && strstr(detail_of("/data/path"), "daemon"),
       "the daemon refuses a path with 422 at /data/path");
    if (rc == 0)
        srv_spec_fini(&spec);
    unlink(file);
    rmdir(dir);
}

int main(void)
{
    check_local_data();
    /* A minimal valid spec gets every default filled. */
    int rc = parse("{\"model\":{\"arch\":\"mlp\"},\"data\":{\"source\":\"synthetic\"},"
                   "\"stages\":[{\"op\":\"fit\",\"epochs\":2}]}");
    is_int(rc, 0, "minimal spec parses");
    if (rc == 0) {
        is_int(spec.eng.batch_size, 64, "batch_size default");
        is_int(spec.eng.seed, 0, "seed default");
        is_int(spec.eng.model.n_hidden, 1, "one hidden layer by default");
        is_int(spec.eng.model.hidden[0], 64, "hidden default 64");
        is_int(spec.eng.data.kind, ENG_DATA_SYNTHETIC, "synthetic data");
        is_int(spec.eng.data.n_train, 512, "n_train default");
        is_int(spec.eng.data.classes, 4, "classes default");
        is_int(spec.eng.opt.kind, ENG_OPT_ADAM, "adam by default");
        is_near(spec.eng.opt.wd, 0.01, 1e-6, "optimizer wd default");
        is_int(spec.eng.n_stages, 1, "one stage");
        is_int(spec.stages[0].op, ENG_STAGE_FIT, "fit stage");
        is_int(spec.stages[0].epochs, 2, "epochs");
        is_int(spec.stages[0].lr.kind, ENG_LR_VALUE, "lr is a value");
        is_near(spec.stages[0].lr.v[0], 1e-3, 1e-6, "lr default 1e-3");
        is_near(spec.stages[0].wd, 0.01, 1e-6, "stage wd defaults to the optimizer's");
        json_t *n = spec.normalized;
        is_int(json_integer_value(json_object_get(n, "batch_size")), 64, "normalised batch");
        ok(json_is_null(json_object_get(n, "name")), "normalised name is null");
        is_int(json_integer_value(json_object_get(json_object_get(n, "data"), "n_valid")), 128,
               "normalised n_valid");
        json_t *st0 = json_array_get(json_object_get(n, "stages"), 0);
        is_near(json_number_value(json_object_get(st0, "lr")), 1e-3, 1e-12, "normalised lr");
        is_near(json_number_value(json_object_get(st0, "wd")), 0.01, 1e-12, "normalised wd");

        /* The normalised text parses again to the same text. */
        char *t1 = srv_spec_dump(&spec);
        srv_spec_fini(&spec);
        is_int(parse(t1), 0, "normalised spec parses again");
        char *t2 = srv_spec_dump(&spec);
        is_str(t2, t1, "normalisation is idempotent");
        free(t1);
        free(t2);
        srv_spec_fini(&spec);
    }

    /* No stages: the seed workflow. */
    rc = parse("{\"name\":\"demo\"}");
    is_int(rc, 0, "empty spec parses");
    if (rc == 0) {
        ok(spec.has_name && strcmp(spec.name, "demo") == 0, "name kept");
        is_int(spec.eng.n_stages, 7, "default workflow has 7 stages");
        is_int(spec.stages[0].op, ENG_STAGE_FREEZE, "1: freeze");
        is_int(spec.stages[1].op, ENG_STAGE_LR_FIND, "2: lr_find");
        is_int(spec.stages[1].num_it, 100, "lr_find num_it default");
        is_int(spec.stages[2].op, ENG_STAGE_FIT_ONE_CYCLE, "3: fit_one_cycle");
        is_int(spec.stages[2].lr.kind, ENG_LR_SUGGESTION, "3: lr from a suggestion");
        is_int(spec.stages[2].lr.suggest, ENG_SUGGEST_VALLEY, "3: valley");
        is_near(spec.stages[2].pct_start, 0.25, 1e-6, "pct_start default");
        is_near(spec.stages[2].moms[1], 0.85, 1e-6, "moms default");
        is_int(spec.stages[3].op, ENG_STAGE_UNFREEZE, "4: unfreeze");
        is_near(spec.stages[5].lr.slice_lo_divide, 10, 1e-6, "6: slice_divide 10");
        is_int(spec.stages[6].op, ENG_STAGE_SAVE, "7: save");
        is_str(spec.stages[6].name, "model", "7: save name model");
        srv_spec_fini(&spec);
    }

    /* LR forms. */
    rc = parse("{\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,"
               "\"lr_max\":{\"slice\":[1e-4,1e-3]}},"
               "{\"op\":\"fit\",\"epochs\":1,\"lr\":{\"slice\":[1e-3]}},"
               "{\"op\":\"fit\",\"epochs\":1,\"lr\":[1e-4,1e-3]}]}");
    is_int(rc, 0, "slice and list LRs parse");
    if (rc == 0) {
        is_int(spec.stages[0].lr.kind, ENG_LR_SLICE, "slice(lo, hi)");
        is_near(spec.stages[0].lr.v[0], 1e-4, 1e-6, "slice lo");
        is_near(spec.stages[0].lr.v[1], 1e-3, 1e-6, "slice hi");
        is_int(spec.stages[1].lr.kind, ENG_LR_SLICE_HI, "slice(hi)");
        is_int(spec.stages[2].lr.kind, ENG_LR_LIST, "per-group list");
        is_int(spec.stages[2].lr.n, 2, "list length");
        srv_spec_fini(&spec);
    }

    /* Errors and their pointers. */
    is_int(parse("{\"stages\": [}"), -1, "malformed JSON fails");
    is_int(errs.status, 400, "malformed JSON is a 400");
    ok(strstr(errs.detail, "line 1") != NULL, "malformed JSON detail has the position: %s",
       errs.detail);
    ok(fails_at("[1,2]", ""), "a non-object document fails at the root");
    ok(fails_at("{\"foo\":1}", "/foo"), "unknown top-level field");
    is_str(detail_of("/foo"), "unknown field", "unknown field detail");
    ok(fails_at("{\"model\":{\"arch\":\"mlp\",\"bogus\":true}}", "/model/bogus"),
       "unknown model field");
    ok(fails_at("{\"model\":{\"hidden\":[8]}}", "/model/arch"), "arch is required");
    ok(fails_at("{\"model\":{\"arch\":\"vgg99\"}}", "/model/arch"), "unknown arch");
    ok(fails_at("{\"model\":{\"arch\":\"mlp\",\"hidden\":[8,0]}}", "/model/hidden/1"),
       "hidden size 0");
    ok(fails_at("{\"model\":{\"arch\":\"mlp\",\"dropout\":1}}", "/model/dropout"),
       "dropout 1 is out of range");
    ok(fails_at("{\"batch_size\":0}", "/batch_size"), "batch_size 0");
    ok(fails_at("{\"batch_size\":5000}", "/batch_size"), "batch_size too big");
    ok(fails_at("{\"seed\":-1}", "/seed"), "negative seed");
    ok(fails_at("{\"name\":\"\"}", "/name"), "empty name");
    ok(fails_at("{\"data\":{\"source\":\"synthetic\",\"classes\":1}}", "/data/classes"),
       "one class");
    ok(fails_at("{\"data\":{\"source\":\"mnist\"}}", "/data/source"), "unknown source");
    ok(fails_at("{\"data\":{\"source\":\"fashion-mnist\"}}", "/data/source"),
       "fashion-mnist files missing");
    ok(fails_at("{\"optimizer\":{\"type\":\"lamb\"}}", "/optimizer/type"), "unknown optimizer");
    ok(fails_at("{\"optimizer\":{\"eps\":0}}", "/optimizer/eps"), "eps 0");
    ok(fails_at("{\"stages\":[]}", "/stages"), "empty stage list");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1},{\"op\":\"fit\",\"epochs\":-1}]}",
                "/stages/1/epochs"),
       "negative epochs");
    is_str(detail_of("/stages/1/epochs"), "must be an integer >= 1", "epochs detail");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":\"3\"}]}", "/stages/0/epochs"),
       "epochs as a string");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\"}]}", "/stages/0/epochs"), "epochs required");
    ok(fails_at("{\"stages\":[{\"op\":\"explode\"}]}", "/stages/0/op"), "unknown op");
    ok(fails_at("{\"stages\":[{\"epochs\":1}]}", "/stages/0/op"), "op required");
    ok(fails_at("{\"stages\":[{\"op\":\"freeze\",\"n\":1}]}", "/stages/0/n"),
       "field of another op is unknown");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":0}]}", "/stages/0/lr"), "lr 0");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":\"fast\"}]}", "/stages/0/lr"),
       "lr as a string");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":[]}]}", "/stages/0/lr"),
       "empty lr list");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":{\"slice\":[1e-3,1e-4]}}]}",
                "/stages/0/lr/slice"),
       "slice lo > hi");
    ok(fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":1,\"lr\":{\"slice\":[1,2,3]}}]}",
                "/stages/0/lr/slice"),
       "slice of three");
    ok(fails_at("{\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,"
                "\"lr_max\":{\"suggestion\":\"valley\"}}]}",
                "/stages/0/lr_max/suggestion"),
       "suggestion without an earlier lr_find");
    ok(fails_at("{\"stages\":[{\"op\":\"lr_find\"},{\"op\":\"fit_one_cycle\",\"epochs\":1,"
                "\"lr_max\":{\"suggestion\":\"best\"}}]}",
                "/stages/1/lr_max/suggestion"),
       "unknown suggestion");
    ok(fails_at("{\"stages\":[{\"op\":\"lr_find\"},{\"op\":\"fit\",\"epochs\":1,"
                "\"lr\":{\"suggestion\":\"valley\",\"divide\":0}}]}",
                "/stages/1/lr/divide"),
       "suggestion divide 0");
    ok(fails_at("{\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,\"pct_start\":1}]}",
                "/stages/0/pct_start"),
       "pct_start 1");
    ok(fails_at("{\"stages\":[{\"op\":\"fit_one_cycle\",\"epochs\":1,\"moms\":[0.9]}]}",
                "/stages/0/moms"),
       "moms of one");
    ok(fails_at("{\"stages\":[{\"op\":\"lr_find\",\"start_lr\":1,\"end_lr\":0.5}]}",
                "/stages/0/end_lr"),
       "end_lr below start_lr");
    ok(fails_at("{\"stages\":[{\"op\":\"save\",\"name\":\".hidden\"}]}", "/stages/0/name"),
       "save name starting with a dot");
    ok(fails_at("{\"stages\":[{\"op\":\"save\",\"name\":\"a/b\"}]}", "/stages/0/name"),
       "save name with a slash");
    ok(fails_at("{\"stages\":[{\"op\":\"save\",\"name\":\"checkpoint\"}]}", "/stages/0/name"),
       "save name reserved");
    ok(fails_at("{\"stages\":[{\"op\":\"freeze_to\"}]}", "/stages/0/n"), "freeze_to needs n");
    ok(fails_at("{\"a/b~c\":1}", "/a~1b~0c"), "pointer escapes / and ~");
    parse("{\"foo\":1,\"batch_size\":0,\"stages\":[{\"op\":\"x\"}]}");
    is_int(errs.n_total, 3, "every error is reported");

    /* API encoders. */
    char tbuf[32];
    srv_time_format(1795827723456LL, tbuf, sizeof tbuf);
    is_str(tbuf, "2026-11-28T01:02:03.456Z", "time format");
    store_job j;
    memset(&j, 0, sizeof j);
    j.id = 7;
    j.state = STORE_JOB_QUEUED;
    j.created_at = 1795827723456LL;
    j.spec_json = "{\"seed\":1}";
    j.progress.stage_index = -1;
    json_t *o = srv_job_to_json(&j, 2);
    ok(o != NULL, "job object built");
    is_str(json_string_value(json_object_get(o, "object")), "job", "object: job");
    is_int(json_integer_value(json_object_get(o, "id")), 7, "id");
    is_str(json_string_value(json_object_get(o, "state")), "queued", "state");
    is_str(json_string_value(json_object_get(o, "created_at")), "2026-11-28T01:02:03.456Z",
           "created_at");
    ok(json_is_null(json_object_get(o, "started_at")), "started_at null");
    is_int(json_integer_value(json_object_get(o, "queue_position")), 2, "queue position");
    ok(json_is_null(json_object_get(o, "stage")), "no stage yet");
    ok(json_is_null(json_object_get(o, "metrics")), "no metrics yet");
    is_int(json_integer_value(json_object_get(json_object_get(o, "spec"), "seed")), 1,
           "spec embedded");
    json_decref(o);

    /* Status table and problems. */
    is_int(srv_status_for_store(STORE_ENOTFOUND), 404, "not found -> 404");
    is_int(srv_status_for_store(STORE_ECONFLICT), 409, "conflict -> 409");
    is_int(srv_status_for_store(STORE_EIO), 500, "io -> 500");
    is_int(srv_status_for_engine(ENG_EINVAL), 422, "engine einval -> 422");
    is_int(srv_status_for_engine(-1000), 500, "unknown code -> 500");
    is_str(srv_problem_slug(413), "payload-too-large", "413 slug");
    is_str(srv_problem_slug(415), "unsupported-media-type", "415 slug");
    is_str(srv_problem_slug(405), "method-not-allowed", "405 slug");
    is_str(srv_problem_slug(503), "unavailable", "503 slug");
    json_t *p = srv_problem_new(404, "no such job", "/v1/jobs/9");
    is_str(json_string_value(json_object_get(p, "type")), "urn:thawd:problem:not-found",
           "problem type");
    is_int(json_integer_value(json_object_get(p, "status")), 404, "problem status");
    is_str(json_string_value(json_object_get(p, "instance")), "/v1/jobs/9", "problem instance");
    json_decref(p);
    fails_at("{\"stages\":[{\"op\":\"fit\",\"epochs\":0}]}", "/stages/0/epochs");
    p = srv_problem_from_spec_errors(&errs, "/v1/jobs");
    json_t *e0 = json_array_get(json_object_get(p, "errors"), 0);
    is_str(json_string_value(json_object_get(e0, "pointer")), "/stages/0/epochs",
           "problem errors carry the pointer");
    is_str(json_string_value(json_object_get(p, "type")), "urn:thawd:problem:validation-error",
           "validation problem type");
    json_decref(p);

    /* vision model fields */
    rc = parse("{\"model\":{\"arch\":\"resnet18\",\"in_channels\":1,\"head\":{\"hidden\":[256,"
               "128],\"ps\":0.3,\"concat_pool\":false},\"weights\":\"/w.safetensors\","
               "\"body_only\":true}}");
    is_int(rc, 0, "resnet18 with head options, weights and body_only parses");
    if (rc == 0) {
        const eng_model_spec *m = &spec.eng.model;
        ok(strcmp(m->arch, "resnet18") == 0 && m->in_channels == 1 &&
               m->head.kind == ENG_HEAD_DEFAULT && m->head.n_hidden == 2 &&
               m->head.hidden[1] == 128 && m->head.ps > 0.29f && m->head.ps < 0.31f &&
               !m->head.concat_pool && strcmp(m->weights, "/w.safetensors") == 0 && m->body_only,
           "model fields map onto eng_model_spec");
        srv_spec_fini(&spec);
    }
    rc = parse("{\"model\":{\"arch\":\"cnn-small\"}}");
    if (rc == 0) {
        ok(spec.eng.model.head.n_hidden == 1 && spec.eng.model.head.hidden[0] == 512 &&
               spec.eng.model.head.concat_pool && !spec.eng.model.weights[0],
           "head defaults: fastai's create_head");
        srv_spec_fini(&spec);
    } else {
        ok(0, "cnn-small parses");
    }
    ok(fails_at("{\"model\":{\"arch\":\"cnn-small\",\"head\":{\"kind\":\"torchvision\"}}}",
                "/model/head/kind"),
       "torchvision head only for resnet");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"head\":{\"kind\":\"big\"}}}",
                "/model/head/kind"),
       "unknown head kind");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"head\":{\"hidden\":[0]}}}",
                "/model/head/hidden/0"),
       "head hidden sizes are checked with their index");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"head\":{\"ps\":1}}}", "/model/head/ps"),
       "head ps < 1");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"head\":{\"pool\":1}}}", "/model/head/pool"),
       "unknown head field");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"in_channels\":-1}}", "/model/in_channels"),
       "in_channels range");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"weights\":\"\"}}", "/model/weights"),
       "empty weights path");
    ok(fails_at("{\"model\":{\"arch\":\"resnet34\",\"body_only\":true}}", "/model/body_only"),
       "body_only needs weights");

    check_workflow_fields();
    return done_testing();
}
