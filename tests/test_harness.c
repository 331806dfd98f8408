/*
 * The test harness itself: a missived started by a test ends with that test,
 * even when the test is killed (ctest's SIGKILL on a timeout) and cannot stop it.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "missive/util.h"
#include "server_harness.h"

/* 1 while pid is a live process (a zombie nobody reaped yet counts as gone) */
static int process_alive(pid_t pid)
{
    char path[64], line[256];
    FILE *f;
    const char *state;
    int alive;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    alive = fgets(line, sizeof(line), f) != NULL;
    fclose(f);
    state = alive ? strrchr(line, ')') : NULL;
    return state != NULL && state[1] == ' ' && state[2] != 'Z' && state[2] != 'X';
}

/* A test process that starts a server and is then killed: the server must go too. */
static void test_server_ends_with_killed_test(void **state)
{
    struct test_server s;
    int fds[2], status = 0, gone = 0;
    struct pollfd p = {.events = POLLIN};
    pid_t test, server = 0;
    char cmd[128];

    (void)state;
    test_server_init(&s, NULL);
    assert_int_equal(pipe(fds), 0);
    test = fork();
    assert_true(test >= 0);
    if (test == 0) {
        close(fds[0]);
        test_server_start(&s);
        if (write(fds[1], &s.pid, sizeof(s.pid)) != (ssize_t)sizeof(s.pid))
            _exit(1);
        for (;;)
            pause();
    }
    close(fds[1]);
    p.fd = fds[0];
    assert_int_equal(poll(&p, 1, 20000), 1);
    assert_int_equal(read(fds[0], &server, sizeof(server)), (ssize_t)sizeof(server));
    close(fds[0]);
    assert_true(server > 0);
    assert_true(process_alive(server)); /* it runs, started by the test process */
    assert_int_equal(kill(test, SIGKILL), 0);
    assert_int_equal(waitpid(test, &status, 0), test);
    assert_true(WIFSIGNALED(status));
    for (int i = 0; i < 200 && !gone; i++) {
        struct timespec ts = {0, 50 * 1000000L};

        gone = !process_alive(server);
        if (!gone)
            nanosleep(&ts, NULL);
    }
    if (!gone)
        kill(server, SIGKILL); /* leave nothing behind, even when failing */
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s.dir);
    assert_int_equal(system(cmd), 0);
    if (!gone)
        fail_msg("missived %d outlived its killed test", (int)server);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_ends_with_killed_test),
    };

    if (msv_init() != MSV_OK)
        return 1;
    return cmocka_run_group_tests_name("harness", tests, NULL, NULL);
}
