/*
 * Structured logs: one line per event on standard error,
 *   ts=2026-11-22T18:00:00.123Z level=info event=conn_open peer=127.0.0.1:5555
 * Values never include keys, plaintexts or message bodies.
 */
#ifndef MSV_SERVER_LOG_H
#define MSV_SERVER_LOG_H

#include "server/config.h"

void msv_log_set_level(enum msv_log_level level);

/*
 * With a path, log lines go to that file (appended, created 0600) instead of
 * standard error, which is replaced by it; calling it again (on SIGHUP)
 * reopens the path, so a rotated file is let go. 0 or -1 (errno set).
 */
int msv_log_open(const char *path);

/* fmt adds the event's key=value pairs; it may be "" for none. */
void msv_log(enum msv_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
