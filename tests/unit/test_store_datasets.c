/*
 * test_store_datasets.c: the dataset registry rows: add, unique names, get by id and name,
 * list, and delete refused while a queued or running job's spec names the dataset.
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
    store_close(s);
    return done_testing();
}
