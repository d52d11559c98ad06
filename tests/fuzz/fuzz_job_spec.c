/*
 * fuzz_job_spec.c: drives job-spec JSON -> eng_job_spec validation with arbitrary bytes.
 *
 * Properties checked on every input: parsing never crashes or leaks; a rejected document
 * always carries a 400/422 status and at least a summary; an accepted document's
 * normalised form parses again, is accepted, passes the engine's own validation, and
 * normalises to the same text (normalisation is idempotent). A violated property aborts,
 * which libFuzzer and the corpus runner both report.
 *
 * Specs are parsed as the daemon parses them (registries present): that is the path the
 * network reaches, and it never opens a file the spec names (a local "path" or weights file
 * is refused), so arbitrary input cannot make the fuzzer scan the filesystem. The registries
 * here are empty: every dataset or model name is unknown.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int no_dataset(void *user, int64_t id, const char *name, srv_dataset_ref *out)
{
    (void)user, (void)id, (void)name, (void)out;
    return -1;
}

static int no_model(void *user, int64_t id, const char *name, srv_model_ref *out)
{
    (void)user, (void)id, (void)name, (void)out;
    return -1;
}

static const srv_spec_registry empty_registry = {no_dataset, no_model, NULL};

#define FUZZ_CHECK(cond)                                                                \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    srv_spec spec, again;
    srv_spec_errors errs;

    /* Fashion-MNIST paths point nowhere: file existence is not what is being fuzzed. */
    if (srv_spec_parse_text_reg((const char *)data, size, "/nonexistent", &empty_registry, &spec,
                                &errs) != 0) {
        FUZZ_CHECK(errs.status == 400 || errs.status == 422);
        FUZZ_CHECK(errs.detail[0] != '\0');
        return 0;
    }
    char *text = srv_spec_dump(&spec);
    FUZZ_CHECK(text != NULL);
    eng_error eerr;
    FUZZ_CHECK(eng_job_spec_validate(&spec.eng, &eerr) == 0);

    int rc =
        srv_spec_parse_text_reg(text, strlen(text), "/nonexistent", &empty_registry, &again, &errs);
    if (rc != 0)
        fprintf(stderr, "normalised spec rejected: %s\n%s\n", errs.detail, text);
    FUZZ_CHECK(rc == 0);
    char *text2 = srv_spec_dump(&again);
    FUZZ_CHECK(text2 != NULL);
    FUZZ_CHECK(strcmp(text, text2) == 0);

    free(text2);
    free(text);
    srv_spec_fini(&again);
    srv_spec_fini(&spec);
    return 0;
}
