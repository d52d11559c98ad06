/*
 * test_store_models.c: the models registry rows: add (argument checks, unique names), get by
 * id and name, the newest-first cursor list, and delete refused while a queued or running
 * job's spec names the model by id (a job naming a path or another model does not count).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "tap.h"

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static char arch[] = "cnn-small", shape[] = "[1,null,null]", path_[] = "/d/models/m.safetensors",
            sha[] = SHA, bad_sha[] = "ABC";

/* store_model's fields are not const (the struct also carries what the store returns) */
static store_model row(char *name, char *fit, int64_t job, char *ckpt)
{
    store_model m;
    memset(&m, 0, sizeof m);
    m.name = name;
    m.arch = arch;
    m.fit = fit;
    m.in_shape_json = shape;
    m.num_classes = strcmp(fit, "full") == 0 ? 10 : 0;
    m.path = path_;
    m.size = 1234;
    m.sha256 = sha;
    m.source_job_id = job;
    m.source_checkpoint = ckpt;
    return m;
}

int main(void)
{
    store *s = NULL;
    ok(store_open(":memory:", NULL, NULL, &s) == 0, "open");
    char small[] = "small", x[] = "x", body[] = "body", third[] = "third", full[] = "full",
         half[] = "half", bodyfit[] = "body", model[] = "model";
    int64_t a = 0, b = 0, c = 0;
    store_model m = row(small, full, 0, NULL);
    is_int(store_model_add(s, &m, &a), 0, "add an upload");
    ok(a > 0, "it has an id");
    is_int(store_model_add(s, &m, &b), STORE_ECONFLICT, "same name -> conflict");
    m = row(x, half, 0, NULL);
    is_int(store_model_add(s, &m, &b), STORE_EINVAL, "fit must be full or body");
    m = row(x, full, 0, NULL);
    m.sha256 = bad_sha;
    is_int(store_model_add(s, &m, &b), STORE_EINVAL, "bad sha256 -> EINVAL");
    m = row(x, full, 3, NULL);
    is_int(store_model_add(s, &m, &b), STORE_EINVAL, "a promoted model needs its checkpoint");
    m = row(x, full, 0, model);
    is_int(store_model_add(s, &m, &b), STORE_EINVAL, "an upload has no checkpoint name");
    m = row(body, bodyfit, 7, model);
    m.in_shape_json = NULL;
    is_int(store_model_add(s, &m, &b), 0, "add a promoted body-only model");
    m = row(third, full, 0, NULL);
    is_int(store_model_add(s, &m, &c), 0, "add a third");

    store_model g;
    is_int(store_model_get(s, a, NULL, &g), 0, "get by id");
    ok(strcmp(g.name, "small") == 0 && strcmp(g.arch, "cnn-small") == 0 &&
           strcmp(g.fit, "full") == 0 && strcmp(g.in_shape_json, "[1,null,null]") == 0 &&
           g.num_classes == 10 && strcmp(g.path, "/d/models/m.safetensors") == 0 &&
           g.size == 1234 && strcmp(g.sha256, SHA) == 0 && g.source_job_id == 0 &&
           g.source_checkpoint == NULL && g.created_at > 0,
       "fields round-trip");
    store_model_fini(&g);
    is_int(store_model_get(s, 0, "body", &g), 0, "get by name");
    ok(g.id == b && g.source_job_id == 7 && g.source_checkpoint &&
           strcmp(g.source_checkpoint, "model") == 0 && g.in_shape_json == NULL,
       "the promoted model's source and unknown shape round-trip");
    store_model_fini(&g);
    is_int(store_model_get(s, 999, NULL, &g), STORE_ENOTFOUND, "unknown id");
    is_int(store_model_get(s, 0, "nope", &g), STORE_ENOTFOUND, "unknown name");

    store_model *arr = NULL;
    size_t n = 0;
    bool more = false;
    is_int(store_model_list(s, 0, 2, &arr, &n, &more), 0, "list a page of 2");
    ok(n == 2 && arr[0].id == c && arr[1].id == b && more, "newest first, more remain");
    int64_t cursor = n ? arr[n - 1].id : 0;
    store_model_list_free(arr, n);
    is_int(store_model_list(s, cursor, 2, &arr, &n, &more), 0, "the next page");
    ok(n == 1 && arr[0].id == a && !more, "the oldest, nothing more");
    store_model_list_free(arr, n);
    is_int(store_model_list(s, 0, 0, &arr, &n, &more), STORE_EINVAL, "limit 0 is refused");

    char spec[160];
    snprintf(spec, sizeof spec, "{\"model\":{\"arch\":\"cnn-small\",\"weights\":%lld}}",
             (long long)a);
    int64_t job = 0, users = 0, other = 0;
    is_int(store_job_enqueue(s, NULL, spec, &job), 0, "a job using model a");
    is_int(store_job_enqueue(s, NULL, "{\"model\":{\"weights\":\"/tmp/1\"}}", &other), 0,
           "a job naming a local path");
    char *path = NULL;
    is_int(store_model_delete(s, a, &users, &path), STORE_ECONFLICT, "delete refused");
    ok(users == 1 && path == NULL, "one user reported");
    is_int(store_model_delete(s, c, &users, &path), 0, "a model no job uses is deleted");
    free(path);
    path = NULL;
    store_job cj;
    is_int(store_job_cancel(s, job, &cj), 0, "cancel the job");
    store_job_fini(&cj);
    is_int(store_model_delete(s, a, &users, &path), 0, "delete allowed once the job ended");
    ok(path && strcmp(path, "/d/models/m.safetensors") == 0, "the file to remove is returned");
    free(path);
    is_int(store_model_delete(s, a, NULL, NULL), STORE_ENOTFOUND, "gone");
    is_int(store_model_delete(s, 0, NULL, NULL), STORE_EINVAL, "id 0 is refused");
    store_close(s);
    return done_testing();
}
