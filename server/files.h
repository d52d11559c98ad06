/*
 * files.h: file-system helpers the server's entry points share.
 */
#pragma once

/* Creates `path` and every missing parent (mode 0755, like `mkdir -p`); an existing
 * directory is fine. Returns 0, or -1 with errno set (ENAMETOOLONG past PATH_MAX). */
int srv_mkdir_p(const char *path);
