/* API keys (policy/api_key.h): a presented key finds its client by the
 * SHA-256 of the key, whichever of its keys it is; anything else finds none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "policy/api_key.h"

static void digest(const char *key, uint8_t out[32])
{
    unsigned n = 0;
    assert_true(EVP_Digest(key, strlen(key), out, &n, EVP_sha256(), NULL));
}

static void test_lookup(void **state)
{
    (void)state;
    /* Three clients, the second with two keys (rotation), many keys in all
     * so that slots collide. */
    enum { N = 40 };
    static uint8_t keys[N][32];
    char name[32];
    config_client_t clients[3];
    memset(clients, 0, sizeof clients);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "key-%d", i);
        digest(name, keys[i]);
    }
    clients[0].key_sha256 = &keys[0];
    clients[0].n_keys = 1;
    clients[1].key_sha256 = &keys[1];
    clients[1].n_keys = 2;
    clients[2].key_sha256 = &keys[3];
    clients[2].n_keys = N - 3;
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.clients = clients;
    cfg.n_clients = 3;
    api_key_index_t *ix = api_key_index_new(&cfg);
    assert_non_null(ix);
    api_key_hasher_t h;
    assert_int_equal(api_key_hasher_init(&h), 0);
    assert_int_equal(api_key_lookup(ix, &h, "key-0", 5), 0);
    assert_int_equal(api_key_lookup(ix, &h, "key-1", 5), 1);
    assert_int_equal(api_key_lookup(ix, &h, "key-2", 5), 1);
    for (int i = 3; i < N; i++) {
        snprintf(name, sizeof name, "key-%d", i);
        assert_int_equal(api_key_lookup(ix, &h, name, strlen(name)), 2);
    }
    assert_int_equal(api_key_lookup(ix, &h, "key-", 4), CONFIG_NONE);
    assert_int_equal(api_key_lookup(ix, &h, "key-00", 6), CONFIG_NONE);
    assert_int_equal(api_key_lookup(ix, &h, "KEY-0", 5), CONFIG_NONE);
    assert_int_equal(api_key_lookup(ix, &h, "", 0), CONFIG_NONE);
    static char big[API_KEY_MAX_BYTES + 1];
    memset(big, 'k', sizeof big);
    assert_int_equal(api_key_lookup(ix, &h, big, sizeof big), CONFIG_NONE);
    api_key_hasher_deinit(&h);
    api_key_index_free(ix);
}

static void test_no_clients(void **state)
{
    (void)state;
    config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    api_key_index_t *ix = api_key_index_new(&cfg);
    assert_non_null(ix);
    api_key_hasher_t h;
    assert_int_equal(api_key_hasher_init(&h), 0);
    assert_int_equal(api_key_lookup(ix, &h, "anything", 8), CONFIG_NONE);
    api_key_hasher_deinit(&h);
    api_key_index_free(ix);
    api_key_index_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookup),
        cmocka_unit_test(test_no_clients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
