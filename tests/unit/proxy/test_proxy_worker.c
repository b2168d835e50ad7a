/* proxy/proxy_worker on a real loop: generations and drain. A generation
 * installed while a request is in flight on the previous one: that request
 * finishes on the old generation (its target), new requests use the new one,
 * the old generation's upstream connection is not pooled and its on_free
 * runs once, when its last request and connection are gone. Draining closes
 * idle client connections at once, lets a busy one finish its response
 * (with Connection: close, then a lingering close) and calls on_drained
 * once, when none is left. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "proxy_test.h"

/* Group g on be[0] (generation 1), then on be[1] (generation 2). */
static const char *const on_one = "server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                                  "target_groups:\n"
                                  "  g: {targets: [\"127.0.0.1:%1$u\"]}\n"
                                  "routes:\n"
                                  "  - name: r\n"
                                  "    match: {path_prefix: /}\n"
                                  "    backends: [{target_group: g}]\n"
                                  "    timeout: 30s\n";
static const char *const on_two = "server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                                  "target_groups:\n"
                                  "  g: {targets: [\"127.0.0.1:%2$u\"]}\n"
                                  "routes:\n"
                                  "  - name: r\n"
                                  "    match: {path_prefix: /}\n"
                                  "    backends: [{target_group: g}]\n"
                                  "    timeout: 30s\n";

static char buf[16384];
static int freed, drained;

static void count(void *ctx) { (*(int *)ctx)++; }

/* Generation 1 (of yaml) counts its frees in `freed`. */
static pt_fixture_t *setup_counted(const char *yaml)
{
    pt_fixture_t *f = pt_setup(yaml);
    freed = 0;
    f->pw->gen->on_free = count;
    f->pw->gen->free_ctx = &freed;
    return f;
}

/* A reload's shared parts (its own config, health and weights). */
typedef struct reload {
    config_t *cfg;
    health_t *health;
    weights_t *weights;
} reload_t;

/* A generation `id` of yaml with its own shared parts (in *r); its frees
 * counted in *freed_ctx unless NULL. Nobody's reference yet. */
static proxy_gen_t *gen_of(pt_fixture_t *f, reload_t *r, const char *yaml, uint64_t id,
                           int *freed_ctx)
{
    r->cfg = pt_config(f, yaml);
    r->health = health_new(r->cfg);
    r->weights = weights_new(r->cfg);
    proxy_shared_t shared = {.cfg = r->cfg,
                             .id = id,
                             .metrics = f->reg,
                             .health = r->health,
                             .weights = r->weights,
                             .gen_freed = freed_ctx ? count : NULL,
                             .gen_ctx = freed_ctx};
    proxy_gen_t *gen = proxy_gen_new(&shared, 0);
    assert_non_null(gen);
    return gen;
}

/* Installs a generation of yaml on the fixture's worker. */
static reload_t reload(pt_fixture_t *f, const char *yaml)
{
    reload_t r;
    proxy_gen_t *gen = gen_of(f, &r, yaml, 2, NULL);
    proxy_worker_install(f->pw, proxy_gen_ref(gen));
    assert_ptr_equal(f->pw->gen, gen);
    return r;
}

/* After pt_teardown (which frees the current generation). */
static void reload_free(reload_t *r)
{
    weights_free(r->weights);
    health_free(r->health);
    config_unref(r->cfg);
}

static void test_install_while_in_flight(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_counted(on_one);
    f->be[0].mode = PT_SILENT;
    int c1 = pt_client(f);
    pt_send(c1, "GET /old HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 1);

    /* Reload: generation 2 sends g to be[1]. */
    reload_t r = reload(f, on_two);
    pt_spin(f, 20);
    assert_int_equal(freed, 0); /* its request still runs */

    /* A new connection's request goes to generation 2's target. */
    int c2 = pt_client(f);
    pt_ask(f, c2, "GET /new HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /new");
    assert_int_equal(freed, 0);

    /* The old request finishes on its own generation's target. */
    pt_write(f->be[0].conns[0], "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold");
    pt_answer_ending(f, c1, buf, sizeof buf, "\r\n\r\nold");
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    /* Its upstream connection is retired, not pooled: closed, and with it
     * the generation's last reference goes. */
    PT_WAIT(f, f->be[0].conns[0]->closed == 1);
    PT_WAIT(f, freed == 1);

    /* The same client connection's next request uses generation 2. */
    pt_ask(f, c1, "GET /again HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "two /again");
    assert_int_equal(f->be[0].requests, 1);
    assert_int_equal(f->be[0].accepted, 1);
    pt_spin(f, 20);
    assert_int_equal(freed, 1); /* once */
    close(c1);
    close(c2);
    pt_teardown(f);
    reload_free(&r);
    assert_int_equal(freed, 1);
}

static void test_old_generation_freed_when_idle(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_counted(on_one);
    int c = pt_client(f);
    pt_ask(f, c, "GET /x HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /x");
    /* Only a pooled idle upstream connection holds generation 1 now. */
    assert_int_equal(f->be[0].conns[0]->closed, 0);
    proxy_gen_t *gen2 = pt_gen(f, f->cfg, 2, NULL, NULL);
    proxy_worker_install(f->pw, proxy_gen_ref(gen2));
    PT_WAIT(f, f->be[0].conns[0]->closed == 1); /* its idle connections close */
    PT_WAIT(f, freed == 1);
    pt_ask(f, c, "GET /y HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /y");
    assert_int_equal(f->be[0].accepted, 2); /* a new connection, generation 2's */
    close(c);
    pt_teardown(f);
    assert_int_equal(freed, 1);
}

static void test_drain(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup(on_one);
    drained = 0;
    int idle = pt_client(f);
    pt_ask(f, idle, "GET /i HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /i");
    f->be[0].mode = PT_SILENT;
    int busy = pt_client(f);
    pt_send(busy, "GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 2);

    f->pw->on_drained = count;
    f->pw->drained_ctx = &drained;
    proxy_worker_drain(f->pw, 0);
    pt_read_to_eof(f, idle, buf, sizeof buf, 0);
    assert_int_equal(buf[0], '\0');
    close(idle);
    pt_spin(f, 20);
    assert_int_equal(drained, 0); /* the busy one is still there */

    pt_write(f->be[0].conns[0], "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast");
    pt_read_to_eof(f, busy, buf, sizeof buf, 0); /* closed after its response */
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_non_null(strcasestr(buf, "\r\nConnection: close\r\n"));
    assert_non_null(strstr(buf, "\r\n\r\nlast"));
    /* ficus half-closed and lingers until the client closes its end. */
    close(busy);
    PT_WAIT(f, drained == 1);
    pt_spin(f, 20);
    assert_int_equal(drained, 1); /* once */
    pt_teardown(f);
    assert_int_equal(drained, 1);
}

static void test_stop_frees_old_generation(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_counted(on_one);
    f->be[0].mode = PT_SILENT;
    int c = pt_client(f);
    pt_send(c, "GET /old HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 1);
    proxy_worker_install(f->pw, proxy_gen_ref(pt_gen(f, f->cfg, 2, NULL, NULL)));
    pt_spin(f, 20);
    assert_int_equal(freed, 0);
    /* Stopped with the request still in flight: its generation goes with
     * the request and the connection. */
    close(c);
    pt_teardown(f);
    assert_int_equal(freed, 1);
}

static void test_drain_without_clients(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup(on_one);
    drained = 0;
    f->pw->on_drained = count;
    f->pw->drained_ctx = &drained;
    proxy_worker_drain(f->pw, 0);
    pt_spin(f, 5);
    assert_int_equal(drained, 1);
    pt_teardown(f);
    assert_int_equal(drained, 1);
}

static void test_drain_idle_grace(void **state)
{
    (void)state;
    pt_fixture_t *f = pt_setup(on_one);
    drained = 0;
    int c = pt_client(f);
    pt_ask(f, c, "GET /i HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /i");
    f->pw->on_drained = count;
    f->pw->drained_ctx = &drained;
    proxy_worker_drain(f->pw, 60000);
    pt_spin(f, 5);
    assert_int_equal(drained, 0); /* idle, but within its grace */
    /* A request within the grace is still answered, with Connection: close. */
    pt_ask(f, c, "GET /j HTTP/1.1\r\nHost: a\r\n\r\n", buf, sizeof buf, "one /j");
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    pt_read_to_eof(f, c, buf, sizeof buf, 0);
    close(c);
    PT_WAIT(f, drained == 1);
    pt_teardown(f);
    assert_int_equal(drained, 1);
}

static void test_install_during_backoff(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_counted("server: {listen: [\"127.0.0.1:8080\"], workers: 1}\n"
                                    "target_groups: {g: {targets: [\"127.0.0.1:%1$u\"]}}\n"
                                    "routes: [{name: r, match: {path_prefix: /},"
                                    " backends: [{target_group: g}],"
                                    " retries: {attempts: 1, retry_on: [5xx], backoff: 300ms}}]\n");
    f->be[0].mode = PT_503;
    int c = pt_client(f);
    pt_send(c, "GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
    PT_WAIT(f, f->be[0].requests == 1);
    f->be[0].mode = PT_OK;
    /* Reloaded while the request waits to retry: the retry stays with the
     * request's generation (g on be[0]), not the new one (g on be[1]). */
    reload_t r = reload(f, on_two);
    pt_answer_ending(f, c, buf, sizeof buf, "one /r");
    assert_memory_equal(buf, "HTTP/1.1 200 OK\r\n", 17);
    assert_int_equal(f->be[1].requests, 0);
    PT_WAIT(f, freed == 1);
    close(c);
    pt_teardown(f);
    reload_free(&r);
    assert_int_equal(freed, 1);
}

/* Asks for /PATH with X-Request-Id: id on fd: 1 when generation 2's
 * target ("two") answered, 0 for generation 1's ("one"). */
static int served_by_two(pt_fixture_t *f, int fd, const char *id, const char *path)
{
    char req[256], tail[64];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\n\r\n", path, id);
    snprintf(tail, sizeof tail, " %s", path);
    pt_ask(f, fd, req, buf, sizeof buf, tail);
    snprintf(tail, sizeof tail, "two %s", path);
    return strstr(buf, tail) != NULL;
}

/* A reversible reload's worker side (contract 10.5): a trial generation
 * takes its share of new requests by request id, beside the current one;
 * dropped, it goes once idle and the current one serves everything again;
 * promoted, it becomes the current one and the previous one goes. */
static void test_trial_generation_serves_its_share(void **state)
{
    (void)state;
    pt_fixture_t *f = setup_counted(on_one);
    int trial_freed = 0;
    reload_t r2, r3;
    proxy_gen_t *g1 = f->pw->gen, *g2 = gen_of(f, &r2, on_two, 2, &trial_freed);
    proxy_worker_trial(f->pw, proxy_gen_ref(g2), 100);
    int c = pt_client(f);
    assert_true(served_by_two(f, c, "id-a", "/a"));
    assert_ptr_equal(f->pw->gen, g1);

    proxy_worker_trial(f->pw, NULL, 0);
    PT_WAIT(f, trial_freed == 1); /* its pooled connection closes, and it goes */
    assert_false(served_by_two(f, c, "id-a", "/b"));

    proxy_gen_t *g3 = gen_of(f, &r3, on_two, 3, &trial_freed);
    proxy_worker_trial(f->pw, proxy_gen_ref(g3), 50);
    int first[40], twos = 0;
    char id[16], path[16];
    for (int i = 0; i < 40; i++) {
        snprintf(id, sizeof id, "id-%d", i);
        snprintf(path, sizeof path, "/i%d", i);
        twos += first[i] = served_by_two(f, c, id, path);
    }
    assert_true(twos > 0 && twos < 40);
    for (int i = 0; i < 40; i++) { /* the same id, the same generation */
        snprintf(id, sizeof id, "id-%d", i);
        snprintf(path, sizeof path, "/j%d", i);
        assert_int_equal(served_by_two(f, c, id, path), first[i]);
    }

    proxy_worker_promote(f->pw);
    assert_ptr_equal(f->pw->gen, g3);
    assert_null(f->pw->canary);
    PT_WAIT(f, freed == 1); /* generation 1 goes */
    for (int i = 0; i < 40; i++)
        if (!first[i]) {
            snprintf(id, sizeof id, "id-%d", i);
            assert_true(served_by_two(f, c, id, "/after"));
        }
    assert_int_equal(trial_freed, 1);
    close(c);
    pt_teardown(f); /* frees generation 3, the current one, itself */
    reload_free(&r2);
    reload_free(&r3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_install_while_in_flight),
        cmocka_unit_test(test_old_generation_freed_when_idle),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_stop_frees_old_generation),
        cmocka_unit_test(test_drain_without_clients),
        cmocka_unit_test(test_drain_idle_grace),
        cmocka_unit_test(test_install_during_backoff),
        cmocka_unit_test(test_trial_generation_serves_its_share),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
