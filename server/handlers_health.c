/*
 * handlers_health.c: GET /healthz (liveness: the process answers HTTP).
 */
#include "handlers.h"

void srv_handle_healthz(srv_request *req, srv_reply *rep)
{
    (void)req;
    srv_reply_json(rep, 200, json_pack("{s:s}", "status", "ok"));
}
