/* The table engine (config/schema.h) on a small table of its own: each row
 * kind read and defaulted, unknown keys, wrong types, bounds, the position
 * and key path of every error, the restart-only diff and the JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/schema.h"

/* ------------------------------------------------------------- the table */

typedef struct inner {
    uint32_t n;
    uint64_t wait_ms;
} inner_t;

typedef struct obj {
    uint64_t timeout_ms;
    uint64_t max_bytes;
    uint32_t count;
    uint32_t id;
    bool on;
    double ratio;
    char *name;
    char *note; /* NULL unless written; left out of the JSON then */
    int mode;   /* a custom row: "fast" or "slow" */
    bool has_inner;
    inner_t inner;
    int port; /* a custom row compared by ROW_SAME: only its parity counts */
} obj_t;

static void f_mode(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v, const char *path,
                   void *o)
{
    obj_t *x = o;
    schema_quote_t q;
    x->mode = 0;
    const char *s = v ? schema_str(c, v, path) : NULL;
    if (!s || strcmp(s, "fast") == 0)
        return;
    if (strcmp(s, "slow") == 0)
        x->mode = 1;
    else
        schema_err(c, v, "%s: %s is not fast or slow", path, schema_qnode(&q, v));
}

static json_t *j_mode(const schema_row_t *f, const void *o, const void *root)
{
    const obj_t *x = o;
    return json_string(x->mode ? "slow" : "fast");
}

static void f_port(schema_ctx_t *c, const yaml_node_t *k, const yaml_node_t *v, const char *path,
                   void *o)
{
    obj_t *x = o;
    x->port = v ? atoi(schema_sval(v)) : 0;
}

static bool same_port(const void *a, const void *b)
{
    return ((const obj_t *)a)->port % 2 == ((const obj_t *)b)->port % 2;
}

static const schema_row_t inner_rows[] = {
    ROW_UINT("n", inner_t, n, 7, 0, 100, ROW_RESTART),
    ROW_DURATION("wait", inner_t, wait_ms, 0, 0, 60000),
};

static const schema_row_t rows[] = {
    ROW_DURATION("timeout", obj_t, timeout_ms, 5000, 10, 60000),
    ROW_SIZE("max_size", obj_t, max_bytes, 1024, 1, 1 << 20, ROW_RESTART),
    ROW_UINT("count", obj_t, count, 3, 1, 10),
    ROW_UINT_REQ("id", obj_t, id, 1, 99),
    ROW_BOOL("on", obj_t, on, false),
    ROW_RATIO("ratio", obj_t, ratio, 0.5),
    ROW_STRING("name", obj_t, name, "dflt", ROW_RESTART),
    ROW_STRING("note", obj_t, note, NULL, ROW_OMIT_NULL),
    ROW_CUSTOM("mode", f_mode, ROW_JSON(j_mode)),
    ROW_TABLE("inner", obj_t, inner, inner_rows, ROW_HAS(obj_t, has_inner)),
    ROW_CUSTOM("port", f_port, ROW_SAME(same_port), ROW_RESTART),
    ROW_RAW("raw"),
    ROW_UNSUPPORTED("legacy", "the legacy thing"),
};
#define N_ROWS (sizeof rows / sizeof rows[0])

/* ---------------------------------------------------------------- helpers */

typedef struct loaded {
    arena_t arena;
    obj_t obj;
    config_errors_t errs;
    config_key_pos_t *key_pos;
    schema_seen_t seen;
    bool raw_seen;
} loaded_t;

/* Applies the table to the YAML's top-level mapping; errors in l->errs. */
static void load(loaded_t *l, const char *yaml)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    schema_ctx_t c;
    memset(l, 0, sizeof *l);
    arena_init(&l->arena, 4096);
    config_errors_init(&l->errs);
    assert_true(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
    assert_true(yaml_parser_load(&parser, &doc));
    schema_ctx_init(&c, "t.yaml", &l->arena);
    c.doc = &doc;
    c.values_left = c.values_max = 1000;
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    assert_non_null(root);
    schema_apply(&c, root, root, "", rows, N_ROWS, &l->obj, &l->seen);
    l->raw_seen = SCHEMA_SEEN_VAL(rows, l->seen, "raw") != NULL;
    l->key_pos = c.key_pos;
    schema_ctx_deinit(&c, &l->errs);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
}

static void unload(loaded_t *l)
{
    config_errors_deinit(&l->errs);
    arena_deinit(&l->arena);
}

/* The load gives exactly these errors (a NULL-ended list), in this order. */
static void expect_errors(const char *yaml, const char *const *want)
{
    loaded_t l;
    size_t n = 0;
    load(&l, yaml);
    while (want[n])
        n++;
    if (l.errs.n != n)
        for (size_t i = 0; i < l.errs.n; i++)
            print_message("got: %s\n", l.errs.items[i]);
    assert_int_equal(l.errs.n, n);
    for (size_t i = 0; i < n; i++)
        assert_string_equal(l.errs.items[i], want[i]);
    unload(&l);
}

#define ERRORS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void load_ok(loaded_t *l, const char *yaml)
{
    load(l, yaml);
    for (size_t i = 0; i < l->errs.n; i++)
        print_message("unexpected: %s\n", l->errs.items[i]);
    assert_int_equal(l->errs.n, 0);
}

/* ------------------------------------------------------------------ tests */

/* The file reads as want (strings compared as strings). */
static void expect_obj(const char *yaml, const obj_t *want, bool raw_seen)
{
    loaded_t l;
    load_ok(&l, yaml);
    const obj_t *o = &l.obj;
    assert_int_equal(o->timeout_ms, want->timeout_ms);
    assert_int_equal(o->max_bytes, want->max_bytes);
    assert_int_equal(o->count, want->count);
    assert_int_equal(o->id, want->id);
    assert_int_equal(o->on, want->on);
    assert_true(o->ratio == want->ratio);
    assert_string_equal(o->name, want->name);
    if (want->note)
        assert_string_equal(o->note, want->note);
    else
        assert_null(o->note);
    assert_int_equal(o->mode, want->mode);
    assert_int_equal(o->has_inner, want->has_inner);
    assert_int_equal(o->inner.n, want->inner.n);
    assert_int_equal(o->inner.wait_ms, want->inner.wait_ms);
    assert_int_equal(l.raw_seen, raw_seen); /* RAW rows are read by the caller */
    unload(&l);
}

static void test_defaults(void **state)
{
    /* An absent table still gets its defaults. */
    const obj_t want = {.timeout_ms = 5000,
                        .max_bytes = 1024,
                        .count = 3,
                        .id = 1,
                        .ratio = 0.5,
                        .name = "dflt",
                        .inner = {.n = 7}};
    expect_obj("id: 1\n", &want, false);
}

static void test_every_kind_read(void **state)
{
    const obj_t want = {.timeout_ms = 2000,
                        .max_bytes = 4096,
                        .count = 10,
                        .id = 42,
                        .on = true,
                        .ratio = 0.25,
                        .name = "edge",
                        .note = "hi",
                        .mode = 1,
                        .has_inner = true,
                        .inner = {.n = 0, .wait_ms = 60000}};
    expect_obj("timeout: 2s\nmax_size: 4KiB\ncount: 10\nid: 42\non: true\nratio: 0.25\n"
               "name: edge\nnote: hi\nmode: slow\ninner: {n: 0, wait: 1m}\nraw: [anything]\n",
               &want, true);
}

static void test_null_value_is_the_default(void **state)
{
    loaded_t l;
    load_ok(&l, "id: 1\ntimeout:\nname: ~\ninner: null\n");
    assert_int_equal(l.obj.timeout_ms, 5000);
    assert_string_equal(l.obj.name, "dflt");
    assert_false(l.obj.has_inner);
    unload(&l);
}

static void test_unknown_keys(void **state)
{
    expect_errors("id: 1\ntimout: 1s\nzzzzzz: 1\ninner: {wat: 1}\n<<: {}\n",
                  ERRORS("t.yaml:2:1: timout: unknown key (did you mean \"timeout\"?)",
                         "t.yaml:3:1: zzzzzz: unknown key",
                         "t.yaml:4:9: inner.wat: unknown key (did you mean \"wait\"?)",
                         "t.yaml:5:1: <<: YAML merge keys are not supported; write the keys out"));
}

static void test_wrong_types(void **state)
{
    expect_errors("id: 1\ncount: [1]\ninner: 5\non: maybe\nratio: 2\nname: \"\"\n[a]: 1\n",
                  ERRORS("t.yaml:2:8: count: expected a string, got a list",
                         "t.yaml:3:8: inner: expected a mapping, got a string",
                         "t.yaml:4:5: on: expected true or false, got \"maybe\"",
                         "t.yaml:5:8: ratio: expected a number from 0 to 1, got \"2\"",
                         "t.yaml:6:7: name: must not be empty",
                         "t.yaml:7:1: top level: keys must be strings, got a list"));
}

static void test_bounds(void **state)
{
    expect_errors("id: 100\ntimeout: 5ms\nmax_size: 2MiB\ncount: 0\ninner:\n  wait: 2m\n",
                  ERRORS("t.yaml:1:5: id: \"100\" is out of range (1 to 99)",
                         "t.yaml:2:10: timeout: \"5ms\" is too short (the minimum is 10ms)",
                         "t.yaml:3:11: max_size: \"2MiB\" is too large (the maximum is 1MiB)",
                         "t.yaml:4:8: count: \"0\" is out of range (1 to 10)",
                         "t.yaml:6:9: inner.wait: \"2m\" is too long (the maximum is 1m)"));
    expect_errors(
        "id: 1\ntimeout: 1x\nmax_size: 0\ncount: ten\n",
        ERRORS("t.yaml:2:10: timeout: invalid duration \"1x\" (use a unit: 250ms, 5s, 2m, 1h)",
               "t.yaml:3:11: max_size: \"0\" is too small (the minimum is 1)",
               "t.yaml:4:8: count: expected a whole number from 1 to 10, got \"ten\""));
}

static void test_required_duplicate_unsupported(void **state)
{
    /* Errors come in file order, whatever the order of the rows. */
    expect_errors(
        "count: 2\ncount: 3\nlegacy: 1\nid:\n",
        ERRORS("t.yaml:2:1: count: duplicate key (first at line 1)",
               "t.yaml:3:1: legacy: the legacy thing is not supported by this version of ficus",
               "t.yaml:4:1: id: needs a value"));
    expect_errors("\n  count: 2\n", ERRORS("t.yaml:2:3: id: required key is missing"));
}

static void test_custom_row_error_has_its_path(void **state)
{
    expect_errors("id: 1\nmode: \"turbo\\tx\"\n",
                  ERRORS("t.yaml:2:7: mode: \"turbo\\x09x\" is not fast or slow"));
}

static void test_restart_keys_positions(void **state)
{
    loaded_t l;
    load_ok(&l, "id: 1\ncount: 2\n  \nname: a\ninner:\n    n: 3\n");
    size_t n = 0;
    bool name = false, inner_n = false;
    for (const config_key_pos_t *p = l.key_pos; p; p = p->next, n++) {
        if (strcmp(p->key, "name") == 0)
            name = p->line == 4 && p->col == 1;
        if (strcmp(p->key, "inner.n") == 0)
            inner_n = p->line == 6 && p->col == 5;
    }
    /* count is written but not restart-only; max_size is not written. */
    assert_int_equal(n, 2);
    assert_true(name);
    assert_true(inner_n);
    unload(&l);
}

static void test_restart_diff(void **state)
{
    loaded_t a, b;
    char key[SCHEMA_PATH_BYTES];
    load_ok(&a, "id: 1\nname: a\nport: 8080\n");

    load_ok(&b, "id: 2\nname: a\ncount: 9\ntimeout: 1s\nport: 8082\ninner: {wait: 1s}\n");
    assert_null(schema_restart_diff(rows, N_ROWS, &a.obj, &b.obj, "", key)); /* nothing of it */
    unload(&b);

    load_ok(&b, "id: 1\nname: b\nport: 8080\n");
    assert_string_equal(schema_restart_diff(rows, N_ROWS, &a.obj, &b.obj, "", key), "name");
    unload(&b);

    load_ok(&b, "id: 1\nname: a\nport: 8080\ninner: {n: 8}\n");
    assert_string_equal(schema_restart_diff(rows, N_ROWS, &a.obj, &b.obj, "", key), "inner.n");
    unload(&b);

    load_ok(&b, "id: 1\nname: a\nport: 8081\n"); /* ROW_SAME says odd differs from even */
    assert_string_equal(schema_restart_diff(rows, N_ROWS, &a.obj, &b.obj, "top", key), "top.port");
    unload(&b);

    /* Several: the first in table order. */
    load_ok(&b, "id: 1\nport: 1\nname: c\nmax_size: 1\ninner: {n: 1}\n");
    assert_string_equal(schema_restart_diff(rows, N_ROWS, &a.obj, &b.obj, "", key), "max_size");
    unload(&b);
    unload(&a);
}

static char *dump(const char *yaml)
{
    loaded_t l;
    load_ok(&l, yaml);
    json_t *j = schema_json(rows, N_ROWS, &l.obj, NULL);
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    unload(&l);
    return s;
}

static void test_json(void **state)
{
    char *s = dump("id: 4\n");
    assert_string_equal(s, "{\"timeout\":\"5s\",\"max_size\":\"1KiB\",\"count\":3,\"id\":4,"
                           "\"on\":false,\"ratio\":0.5,\"name\":\"dflt\",\"mode\":\"fast\"}");
    free(s);
    s = dump("id: 4\ntimeout: 1500ms\nmax_size: 1000\non: true\nnote: n\nmode: slow\n"
             "inner: {n: 2}\nraw: 1\nport: 3\n");
    assert_string_equal(s, "{\"timeout\":\"1500ms\",\"max_size\":1000,\"count\":3,\"id\":4,"
                           "\"on\":true,\"ratio\":0.5,\"name\":\"dflt\",\"note\":\"n\","
                           "\"mode\":\"slow\",\"inner\":{\"n\":2,\"wait\":\"0s\"}}");
    free(s);
}

static void test_json_lists(void **state)
{
    obj_t objs[2];
    memset(objs, 0, sizeof objs);
    objs[0].name = "a";
    objs[1].name = "b";
    objs[1].count = 5;
    static const schema_row_t count_row[] = {ROW_UINT("count", obj_t, count, 0, 0, 9)};
    json_t *j =
        schema_json_named(count_row, 1, objs, sizeof objs[0], 2, offsetof(obj_t, name), NULL);
    char *s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "{\"a\":{\"count\":0},\"b\":{\"count\":5}}");
    free(s);
    json_decref(j);
    j = schema_json_array(count_row, 1, objs, sizeof objs[0], 2, NULL);
    s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "[{\"count\":0},{\"count\":5}]");
    free(s);
    json_decref(j);
    j = schema_json_strings(objs, sizeof objs[0], 2, offsetof(obj_t, name));
    s = json_dumps(j, JSON_COMPACT);
    assert_string_equal(s, "[\"a\",\"b\"]");
    free(s);
    json_decref(j);
}

/* What schema_each_str() handed over: "i path=s" per item. */
static void note_item(schema_ctx_t *c, const yaml_node_t *it, const char *path, size_t i,
                      const char *s, void *obj)
{
    char *out = obj;
    snprintf(out + strlen(out), 256 - strlen(out), "%zu %s=%s;", i, path, s);
}

static void test_each_str(void **state)
{
    static const char yaml[] = "[a, [b], c, {d: 1}, \"\"]\n";
    yaml_parser_t parser;
    yaml_document_t doc;
    schema_ctx_t c;
    arena_t arena;
    config_errors_t errs;
    char got[256] = "";
    arena_init(&arena, 1024);
    config_errors_init(&errs);
    assert_true(yaml_parser_initialize(&parser));
    yaml_parser_set_input_string(&parser, (const unsigned char *)yaml, strlen(yaml));
    assert_true(yaml_parser_load(&parser, &doc));
    schema_ctx_init(&c, "t.yaml", &arena);
    c.doc = &doc;
    schema_each_str(&c, yaml_document_get_root_node(&doc), "list", note_item, got);
    schema_ctx_deinit(&c, &errs);
    assert_string_equal(got, "0 list[0]=a;2 list[2]=c;4 list[4]=;");
    assert_int_equal(errs.n, 2);
    assert_string_equal(errs.items[0], "t.yaml:1:5: list[1]: expected a string, got a list");
    assert_string_equal(errs.items[1], "t.yaml:1:13: list[3]: expected a string, got a mapping");
    config_errors_deinit(&errs);
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    arena_deinit(&arena);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_kind_read),
        cmocka_unit_test(test_null_value_is_the_default),
        cmocka_unit_test(test_unknown_keys),
        cmocka_unit_test(test_wrong_types),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_required_duplicate_unsupported),
        cmocka_unit_test(test_custom_row_error_has_its_path),
        cmocka_unit_test(test_restart_keys_positions),
        cmocka_unit_test(test_restart_diff),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_lists),
        cmocka_unit_test(test_each_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
