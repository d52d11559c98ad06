/*
 * app.c: the shared daemon context and the per-thread storage connection.
 *
 * DESIGN: SQLite connections must not be shared between threads (STYLE section 7), and MHD's
 * pool threads are created by the library, so each HTTP thread opens its connection lazily
 * and keeps it in a pthread key; the key's destructor closes it when MHD joins the thread in
 * MHD_stop_daemon(), which happens before main closes storage.
 */
#include "app.h"

#include <stdio.h>
#include <string.h>

#include "jobs_view.h"
#include "log.h"
#include "metrics_prom.h"
#include "sse.h"

static void close_store(void *p)
{
    store_close(p);
}

int srv_app_init(srv_app *app, const srv_config *cfg)
{
    memset(app, 0, sizeof *app);
    app->cfg = cfg;
    snprintf(app->db_path, sizeof app->db_path, "%s/thawd.db", cfg->data_dir);
    snprintf(app->jobs_dir, sizeof app->jobs_dir, "%s/jobs", cfg->data_dir);
    atomic_init(&app->shutting_down, false);
    if (pthread_key_create(&app->store_key, close_store) != 0)
        return -1;
    app->key_created = true;
    return 0;
}

void srv_app_fini(srv_app *app)
{
    /* after HTTP and the workers stopped: nobody streams, counts or notifies any more */
    srv_sse_destroy(app->sse);
    app->sse = NULL;
    srv_prom_destroy(app->prom);
    app->prom = NULL;
    if (app->key_created) {
        srv_app_store_release(app);
        (void)pthread_key_delete(app->store_key); /* only fails for an invalid key */
        app->key_created = false;
    }
}

int srv_app_store(srv_app *app, store **out)
{
    store *s = pthread_getspecific(app->store_key);
    if (!s) {
        int rc = store_open(app->db_path, srv_log_store, NULL, &s);
        if (rc != 0) {
            srv_log(SRV_LOG_ERROR, "cannot open storage path=%s err=%s", app->db_path,
                    store_strerror(rc));
            return rc;
        }
        if (pthread_setspecific(app->store_key, s) != 0) {
            store_close(s);
            return STORE_ENOMEM;
        }
    }
    *out = s;
    return 0;
}

void srv_app_store_release(srv_app *app)
{
    store *s = pthread_getspecific(app->store_key);
    if (s) {
        srv_job_doc_forget(); /* its versions belong to this connection */
        (void)pthread_setspecific(app->store_key, NULL); /* cannot fail for a valid key */
        store_close(s);
    }
}
