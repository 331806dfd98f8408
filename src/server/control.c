/* The control socket between missive-admin and the node on the same data directory (control.h). */
#include "server/control.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ORDER_SUSPENDED "suspended "

static msv_err control_addr(const char *data_dir, struct sockaddr_un *sun)
{
    int n;

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    n = snprintf(sun->sun_path, sizeof(sun->sun_path), "%s/missived.ctl", data_dir);
    return n < 0 || (size_t)n >= sizeof(sun->sun_path) ? MSV_ERR_TOO_BIG : MSV_OK;
}

msv_err msv_control_open(const char *data_dir, int *fd, char *path, size_t path_len)
{
    struct sockaddr_un sun;
    msv_err err = control_addr(data_dir, &sun);
    int s = -1;

    if (err != MSV_OK)
        goto out;
    err = MSV_ERR_IO;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (s < 0)
        goto out;
    /* a node that stopped uncleanly left its socket file: nothing listens on it */
    if (unlink(sun.sun_path) != 0 && errno != ENOENT)
        goto out;
    if (bind(s, (struct sockaddr *)&sun, sizeof(sun)) != 0)
        goto out;
    if (chmod(sun.sun_path, 0600) != 0) {
        unlink(sun.sun_path);
        goto out;
    }
    snprintf(path, path_len, "%s", sun.sun_path);
    *fd = s;
    s = -1;
    err = MSV_OK;
out:
    if (s >= 0)
        close(s);
    return err;
}

msv_err msv_control_read(int fd, uint64_t *account_id)
{
    char buf[MSV_CONTROL_MAX + 1];
    const size_t prefix = strlen(ORDER_SUSPENDED);
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_TRUNC);
    char *end = NULL;
    uint64_t id;

    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? MSV_ERR_AGAIN
                                                                         : MSV_ERR_IO;
    if ((size_t)n > MSV_CONTROL_MAX || (size_t)n <= prefix ||
        memcmp(buf, ORDER_SUSPENDED, prefix) != 0)
        return MSV_ERR_PARSE;
    buf[n] = '\0';
    if (buf[prefix] < '1' || buf[prefix] > '9')
        return MSV_ERR_PARSE;
    errno = 0;
    id = strtoull(buf + prefix, &end, 10);
    if (errno != 0 || *end != '\0')
        return MSV_ERR_PARSE;
    *account_id = id;
    return MSV_OK;
}

msv_err msv_control_send_suspended(const char *data_dir, uint64_t account_id)
{
    struct sockaddr_un sun;
    char order[MSV_CONTROL_MAX];
    msv_err err = control_addr(data_dir, &sun);
    int s = -1, n;

    if (err != MSV_OK)
        goto out;
    n = snprintf(order, sizeof(order), ORDER_SUSPENDED "%" PRIu64, account_id);
    err = MSV_ERR_IO;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        goto out;
    if (sendto(s, order, (size_t)n, 0, (struct sockaddr *)&sun, sizeof(sun)) != n) {
        /* no socket, or nobody bound to it: no node runs here */
        err = errno == ENOENT || errno == ECONNREFUSED ? MSV_ERR_NOT_FOUND : MSV_ERR_IO;
        goto out;
    }
    err = MSV_OK;
out:
    if (s >= 0)
        close(s);
    return err;
}

int msv_control_node_runs(const char *data_dir)
{
    struct sockaddr_un sun;
    int s, runs;

    if (control_addr(data_dir, &sun) != MSV_OK)
        return 0;
    s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    /* a socket file a node left when it was killed refuses the connection */
    runs = s >= 0 && connect(s, (struct sockaddr *)&sun, sizeof(sun)) == 0;
    if (s >= 0)
        close(s);
    return runs;
}
