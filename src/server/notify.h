/*
 * Tells the service manager how missived is doing (systemd's sd_notify
 * protocol: a datagram to the socket named by $NOTIFY_SOCKET), so that a
 * Type=notify unit knows when it is ready, reloading or stopping. Without
 * $NOTIFY_SOCKET nothing happens.
 */
#ifndef MSV_SERVER_NOTIFY_H
#define MSV_SERVER_NOTIFY_H

/* state: newline-separated assignments, e.g. "READY=1\nSTATUS=serving". */
void msv_notify(const char *state);

#endif
