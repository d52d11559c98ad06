/*
 * test_store_datasets.c: the dataset registry rows: add, unique names, get by id and name,
 * list, delete refused while a queued or running job's spec names the dataset or while it is
 * processing, the processing -> ready | failed transition, and the size and sha256 of a
 * processing import recorded once its bytes are copied.
 */
#include <stdlib.h>
#include <string.h>

#include "storage.h"
#include "tap.h"

#define SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

int main(void)
{
    store *s = NULL;
    ok(store_open(":memory:", NULL, NULL, &s) == 0, "open");
    int64_t a = 0, b = 0;
    is_int(store_dataset_add(s, "fmnist", "idx", "/d/a", 100, SHA, "{\"n_train\":1}", &a), 0,
           "add");
    is_int(store_dataset_add(s, "fmnist", "csv", "/d/b", 1, SHA, "{}", &b), STORE_ECONFLICT,
           "same name -> conflict");
    is_int(store_dataset_add(s, "x", "csv", "/d/b", 1, "ABC", "{}", &b), STORE_EINVAL,
           "bad sha256 -> EINVAL");
    is_int(store_dataset_add(s, "other", "csv", "/d/b", 5, SHA, "{}", &b), 0, "add a second");
    store_dataset d;
    is_int(store_dataset_get(s, a, NULL, &d), 0, "get by id");
    ok(d.name && strcmp(d.name, "fmnist") == 0 && strcmp(d.format, "idx") == 0 &&
           strcmp(d.dir, "/d/a") == 0 && d.size == 100 &&
           strcmp(d.info_json, "{\"n_train\":1}") == 0,
       "fields round-trip");
    store_dataset_fini(&d);
    is_int(store_dataset_get(s, 0, "other", &d), 0, "get by name");
    ok(d.id == b, "by name finds the second");
    store_dataset_fini(&d);
    is_int(store_dataset_get(s, 999, NULL, &d), STORE_ENOTFOUND, "unknown id");
    store_dataset *arr = NULL;
    size_t n = 0;
    is_int(store_dataset_list(s, &arr, &n), 0, "list");
    ok(n == 2 && arr[0].id == a && arr[1].id == b, "oldest first");
    store_dataset_list_free(arr, n);

    char spec[128];
    snprintf(spec, sizeof spec, "{\"data\":{\"dataset\":%lld}}", (long long)a);
    int64_t job = 0, users = 0;
    is_int(store_job_enqueue(s, NULL, spec, &job), 0, "a job using dataset a");
    char *dir = NULL;
    is_int(store_dataset_delete(s, a, &users, &dir), STORE_ECONFLICT, "delete refused");
    ok(users == 1 && dir == NULL, "one user reported");
    store_job cj;
    is_int(store_job_cancel(s, job, &cj), 0, "cancel the job");
    store_job_fini(&cj);
    is_int(store_dataset_delete(s, a, &users, &dir), 0, "delete allowed once the job ended");
    ok(dir && strcmp(dir, "/d/a") == 0, "the directory to remove is returned");
    free(dir);
    is_int(store_dataset_delete(s, a, NULL, NULL), STORE_ENOTFOUND, "gone");

    /* processing: added unchecked, finished once, never deleted meanwhile */
    int64_t p = 0, q = 0, *ids = NULL;
    is_int(store_dataset_get(s, b, NULL, &d), 0, "get a ready dataset");
    ok(d.state && strcmp(d.state, "ready") == 0 && d.error == NULL, "store_dataset_add: ready");
    store_dataset_fini(&d);
    is_int(store_dataset_add_processing(s, "up", "csv", "/d/p", 9, SHA, &p), 0, "add processing");
    is_int(store_dataset_add_processing(s, "up", "csv", "/d/p", 9, SHA, &q), STORE_ECONFLICT,
           "processing names are taken too");
    is_int(store_dataset_add_processing(s, "up2", "csv", "/d/q", 9, SHA, &q), 0, "another");
    is_int(store_dataset_get(s, p, NULL, &d), 0, "get processing");
    ok(strcmp(d.state, "processing") == 0 && strcmp(d.info_json, "{}") == 0 && !d.error,
       "processing: state, empty info, no error");
    store_dataset_fini(&d);
    is_int(store_dataset_list_processing(s, &ids, &n), 0, "list processing");
    ok(n == 2 && ids[0] == p && ids[1] == q, "both processing ids, oldest first");
    free(ids);
#define SHA2 "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
    is_int(store_dataset_set_content(s, p, 1234, SHA2), 0, "set content while processing");
    is_int(store_dataset_get(s, p, NULL, &d), 0, "get after set content");
    ok(d.size == 1234 && strcmp(d.sha256, SHA2) == 0 && strcmp(d.state, "processing") == 0,
       "size and sha256 recorded, still processing");
    store_dataset_fini(&d);
    is_int(store_dataset_set_content(s, p, 1, "xyz"), STORE_EINVAL, "set content: bad sha256");
    is_int(store_dataset_set_content(s, p, -1, SHA), STORE_EINVAL, "set content: negative size");
    is_int(store_dataset_set_content(s, 4242, 1, SHA), STORE_ENOTFOUND, "set content: unknown");
    is_int(store_dataset_set_content(s, b, 1, SHA), STORE_ECONFLICT,
           "set content of a ready dataset -> conflict");
    users = 7;
    is_int(store_dataset_delete(s, p, &users, &dir), STORE_ECONFLICT, "delete while processing");
    ok(users == 0 && dir == NULL, "refused with no job users");
    is_int(store_dataset_finish(s, p, NULL, NULL), STORE_EINVAL, "finish needs info or error");
    is_int(store_dataset_finish(s, p, "{\"n_train\":3}", NULL), 0, "finish -> ready");
    is_int(store_dataset_finish(s, p, "{}", NULL), STORE_ECONFLICT, "finish twice -> conflict");
    is_int(store_dataset_finish(s, 4242, "{}", NULL), STORE_ENOTFOUND, "finish unknown");
    is_int(store_dataset_finish(s, q, NULL, "bad header in train.csv"), 0, "finish -> failed");
    is_int(store_dataset_get(s, q, NULL, &d), 0, "get failed");
    ok(strcmp(d.state, "failed") == 0 && d.error && strcmp(d.error, "bad header in train.csv") == 0,
       "failed keeps the message");
    store_dataset_fini(&d);
    is_int(store_dataset_get(s, p, NULL, &d), 0, "get ready");
    ok(strcmp(d.state, "ready") == 0 && strcmp(d.info_json, "{\"n_train\":3}") == 0,
       "ready has its info");
    store_dataset_fini(&d);
    is_int(store_dataset_list_processing(s, &ids, &n), 0, "list processing again");
    ok(n == 0 && ids == NULL, "none left processing");
    is_int(store_dataset_delete(s, q, NULL, &dir), 0, "a failed dataset can be deleted");
    free(dir);
    store_close(s);
    return done_testing();
}
