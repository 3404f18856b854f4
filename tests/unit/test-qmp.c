/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * Tests of the QMP core: framing (monitor/json-stream.c), schema
 * checking (monitor/qapi.c) and dispatch (monitor/qmp-dispatch.c).
 */
#include "monitor/json-stream.h"
#include "monitor/qapi.h"
#include "monitor/qmp.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <math.h>

/* ---- Framing ------------------------------------------------------------- */

typedef struct Texts {
    GPtrArray *texts;           /* complete texts, or "ERR:<why>" */
} Texts;

static void collect(void *opaque, const char *text, const char *error)
{
    Texts *t = opaque;
    g_ptr_array_add(t->texts, text ? g_strdup(text)
                                   : g_strconcat("ERR:", error, NULL));
}

/* Feed @input in pieces of @chunk bytes; return what came out. */
static GPtrArray *split(const char *input, size_t len, size_t chunk)
{
    JsonStream s;
    Texts t = { g_ptr_array_new_with_free_func(g_free) };
    json_stream_init(&s);
    for (size_t off = 0; off < len; off += chunk) {
        json_stream_feed(&s, input + off, MIN(chunk, len - off), collect, &t);
    }
    json_stream_cleanup(&s);
    return t.texts;
}

static void test_framing(void **state)
{
    (void)state;
    const char *in = "{\"a\": \"}{\\\"]\"}  {\"b\":[1,{\"c\":2}]}\n"
                     "[true,false,null]\"str\" 42\n";
    const char *want[] = {
        "{\"a\": \"}{\\\"]\"}", "{\"b\":[1,{\"c\":2}]}", "[true,false,null]",
        "\"str\"", "42",
    };
    /* Whatever the chunking, the same texts come out. */
    for (size_t chunk = 1; chunk <= strlen(in); chunk++) {
        g_autoptr(GPtrArray) out = split(in, strlen(in), chunk);
        assert_int_equal(out->len, G_N_ELEMENTS(want));
        for (size_t i = 0; i < G_N_ELEMENTS(want); i++) {
            assert_string_equal(out->pdata[i], want[i]);
        }
    }
}

static void test_framing_errors(void **state)
{
    (void)state;
    /* A bad byte: one error, the rest of its line skipped, then recovery. */
    const char *in = "{ bad json, more junk }\n{\"ok\":1}";
    g_autoptr(GPtrArray) out = split(in, strlen(in), 3);
    assert_int_equal(out->len, 2);
    assert_string_equal(out->pdata[0], "ERR:JSON parse error, invalid character");
    assert_string_equal(out->pdata[1], "{\"ok\":1}");

    /* Too large: dropped with an error, the next text is fine. */
    GString *big = g_string_new("{\"x\":\"");
    for (int i = 0; i < JSON_STREAM_MAX_SIZE; i++) {
        g_string_append_c(big, 'y');
    }
    g_string_append(big, "\"}{\"z\":0}");
    g_autoptr(GPtrArray) o2 = split(big->str, big->len, 65536);
    assert_int_equal(o2->len, 2);
    assert_string_equal(o2->pdata[0], "ERR:JSON message too large");
    assert_string_equal(o2->pdata[1], "{\"z\":0}");
    g_string_free(big, true);

    /* Too deep. */
    GString *deep = g_string_new(NULL);
    for (int i = 0; i < JSON_STREAM_MAX_DEPTH + 5; i++) {
        g_string_append_c(deep, '[');
    }
    for (int i = 0; i < JSON_STREAM_MAX_DEPTH + 5; i++) {
        g_string_append_c(deep, ']');
    }
    g_autoptr(GPtrArray) o3 = split(deep->str, deep->len, 100);
    assert_int_equal(o3->len, 1);
    assert_string_equal(o3->pdata[0], "ERR:JSON nesting depth limit exceeded");
    g_string_free(deep, true);

    /* Never closed: answered at once (it swallowed every later text
     * before), and the next line is read. */
    GString *open = g_string_new(NULL);
    for (int i = 0; i < 100000; i++) {
        g_string_append_c(open, '[');
    }
    g_string_append(open, "\n{\"ok\":2}");
    g_autoptr(GPtrArray) o4 = split(open->str, open->len, 4096);
    assert_int_equal(o4->len, 2);
    assert_string_equal(o4->pdata[0], "ERR:JSON nesting depth limit exceeded");
    assert_string_equal(o4->pdata[1], "{\"ok\":2}");
    g_string_free(open, true);
}

/* A member's value as written, for QMP's id. */
static void test_member_raw(void **state)
{
    (void)state;
    static const struct { const char *text, *want; } t[] = {
        { "{\"execute\":\"x\",\"id\":18446744073709551616}", "18446744073709551616" },
        { "{ \"id\" : { \"a\": [1, \"}\"] } , \"execute\": \"x\" }",
          "{ \"a\": [1, \"}\"] }" },
        { "{\"arguments\":{\"id\":1},\"id\":\"q\\\"\"}", "\"q\\\"\"" },
        { "{\"x\":\"\\\"id\\\":3\"}", NULL },
        { "{\"execute\":\"x\"}", NULL },
        { "{\"id\": 1e999 }", "1e999" },
    };
    for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
        g_autofree char *got = json_stream_member_raw(t[i].text, "id");
        if (t[i].want) {
            assert_non_null(got);
            assert_string_equal(got, t[i].want);
        } else {
            assert_null(got);
        }
    }
}

/* A reply's text: non-finite numbers as null, the id as written. */
static void test_reply_text(void **state)
{
    (void)state;
    JsonObject *r = json_object_new();
    JsonObject *v = json_object_new();
    json_object_set_double_member(v, "mbps", INFINITY);
    json_object_set_double_member(v, "nan", NAN);
    json_object_set_double_member(v, "ok", 1.5);
    json_object_set_object_member(r, "return", v);
    json_object_set_int_member(r, "id", -1);
    g_autofree char *text = qmp_reply_text(r, "18446744073709551616");
    assert_string_equal(text, "{\"return\":{\"mbps\":null,\"nan\":null,"
                        "\"ok\":1.5}, \"id\": 18446744073709551616}");
}

/* ---- Schema checking ---------------------------------------------------------- */

static const char *test_schema =
    "[{\"enum\":\"Color\",\"data\":[\"red\",\"blue\"]},"
    " {\"struct\":\"Cap\",\"data\":{\"capability\":\"str\",\"state\":\"bool\"}},"
    " {\"command\":\"set\",\"data\":{\"caps\":[\"Cap\"],\"*color\":\"Color\","
    "   \"*n\":\"int\",\"*x\":\"number\",\"*s\":\"size\",\"*any\":\"any\","
    "   \"*in\":{\"deep\":\"str\"}}},"
    " {\"command\":\"plain\"},"
    " {\"command\":\"oobok\",\"allow-oob\":true},"
    " {\"event\":\"EV\"}]";

static JsonObject *obj(const char *json)
{
    g_autoptr(JsonParser) p = json_parser_new();
    assert_true(json_parser_load_from_data(p, json, -1, NULL));
    return json_object_ref(json_node_get_object(json_parser_get_root(p)));
}

static void check(QapiSchema *s, const char *cmd, const char *args,
                  const char *error)
{
    g_autoptr(JsonObject) a = args ? obj(args) : NULL;
    g_autoptr(GError) err = NULL;
    bool ok = qapi_check_args(s, cmd, a, &err);
    if (!error) {
        if (!ok) {
            fail_msg("%s %s: %s", cmd, args, err->message);
        }
        return;
    }
    assert_false(ok);
    assert_string_equal(err->message, error);
}

static void test_schema_check(void **state)
{
    (void)state;
    g_autoptr(QapiSchema) s = qapi_schema_load(test_schema, NULL);
    assert_non_null(s);
    assert_true(qapi_has_command(s, "set"));
    assert_true(qapi_has_event(s, "EV"));
    assert_false(qapi_has_command(s, "EV"));

    check(s, "set", "{\"caps\":[{\"capability\":\"a\",\"state\":true}],"
          "\"color\":\"red\",\"n\":-3,\"x\":1.5,\"s\":4096,\"any\":[{}],"
          "\"in\":{\"deep\":\"d\"}}", NULL);
    check(s, "set", "{\"caps\":[],\"x\":2}", NULL);        /* int is a number */
    check(s, "set", "{}", "Parameter 'caps' is missing");
    check(s, "set", NULL, "Parameter 'caps' is missing");
    check(s, "set", "{\"caps\":[],\"zz\":1}", "Parameter 'zz' is unexpected");
    check(s, "set", "{\"caps\":{}}",
          "Invalid parameter type for 'caps', expected: array");
    check(s, "set", "{\"caps\":[{\"capability\":\"a\"}]}",
          "Parameter 'caps[0].state' is missing");
    check(s, "set", "{\"caps\":[{\"capability\":\"a\",\"state\":1}]}",
          "Invalid parameter type for 'caps[0].state', expected: boolean");
    check(s, "set", "{\"caps\":[{\"capability\":\"a\",\"state\":true,\"q\":1}]}",
          "Parameter 'caps[0].q' is unexpected");
    check(s, "set", "{\"caps\":[],\"color\":\"green\"}",
          "Parameter 'color' does not accept value 'green'");
    check(s, "set", "{\"caps\":[],\"color\":1}",
          "Invalid parameter type for 'color', expected: string");
    check(s, "set", "{\"caps\":[],\"n\":1.5}",
          "Invalid parameter type for 'n', expected: integer");
    check(s, "set", "{\"caps\":[],\"n\":\"1\"}",
          "Invalid parameter type for 'n', expected: integer");
    check(s, "set", "{\"caps\":[],\"s\":-1}",
          "Invalid parameter type for 's', expected: size");
    check(s, "set", "{\"caps\":[],\"x\":\"1\"}",
          "Invalid parameter type for 'x', expected: number");
    check(s, "set", "{\"caps\":[],\"in\":{}}", "Parameter 'in.deep' is missing");
    check(s, "plain", NULL, NULL);
    check(s, "plain", "{}", NULL);
    check(s, "plain", "{\"a\":1}", "Parameter 'a' is unexpected");
    check(s, "nope", NULL, "The command nope has not been found");
}

/* The schema built into ferry loads and holds the machine's commands. */
static void test_builtin_schema(void **state)
{
    (void)state;
    g_autoptr(GError) err = NULL;
    g_autoptr(QapiSchema) s = qapi_schema_load(qapi_schema_json, &err);
    assert_non_null(s);
    const char *cmds[] = { "qmp_capabilities", "query-status", "stop", "cont",
                           "quit", "query-version", "query-commands" };
    for (size_t i = 0; i < G_N_ELEMENTS(cmds); i++) {
        assert_true(qapi_has_command(s, cmds[i]));
    }
    assert_true(qapi_has_event(s, "SHUTDOWN"));
    check(s, "qmp_capabilities", "{\"enable\":[\"oob\"]}", NULL);
    check(s, "qmp_capabilities", "{\"enable\":[\"x\"]}",
          "Parameter 'enable[0]' does not accept value 'x'");
}

/* The SchemaInfo entry named @name in @info, or NULL. */
static JsonObject *info_entry(JsonArray *info, const char *name)
{
    for (guint i = 0; i < json_array_get_length(info); i++) {
        JsonObject *e = json_array_get_object_element(info, i);
        if (!strcmp(json_object_get_string_member(e, "name"), name)) {
            return e;
        }
    }
    return NULL;
}

/* The type of member @m of object type @obj in @info. */
static const char *member_type(JsonArray *info, const char *obj, const char *m,
                               bool *optional)
{
    JsonObject *e = info_entry(info, obj);
    assert_non_null(e);
    assert_string_equal(json_object_get_string_member(e, "meta-type"), "object");
    JsonArray *ms = json_object_get_array_member(e, "members");
    for (guint i = 0; i < json_array_get_length(ms); i++) {
        JsonObject *x = json_array_get_object_element(ms, i);
        if (!strcmp(json_object_get_string_member(x, "name"), m)) {
            *optional = json_object_has_member(x, "default");
            return json_object_get_string_member(x, "type");
        }
    }
    fail_msg("%s has no member %s", obj, m);
    return NULL;
}

/*
 * query-qmp-schema: every definition in QAPI's introspection format;
 * each reference resolves to an entry, once; an optional member has a
 * default (null), a required one none.
 */
static void test_introspect(void **state)
{
    (void)state;
    g_autoptr(QapiSchema) s = qapi_schema_load(test_schema, NULL);
    g_autoptr(JsonNode) n = qapi_schema_introspect(s);
    JsonArray *info = json_node_get_array(n);
    g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint i = 0; i < json_array_get_length(info); i++) {
        const char *name = json_object_get_string_member(
            json_array_get_object_element(info, i), "name");
        assert_true(g_hash_table_add(seen, (char *)name));    /* once */
    }
    JsonObject *set = info_entry(info, "set");
    assert_string_equal(json_object_get_string_member(set, "meta-type"), "command");
    const char *arg = json_object_get_string_member(set, "arg-type");
    assert_string_equal(json_object_get_string_member(set, "ret-type"), "q_empty");
    bool opt;
    assert_string_equal(member_type(info, arg, "caps", &opt), "[Cap]");
    assert_false(opt);
    JsonObject *caps = info_entry(info, "[Cap]");
    assert_string_equal(json_object_get_string_member(caps, "meta-type"), "array");
    assert_string_equal(json_object_get_string_member(caps, "element-type"), "Cap");
    assert_string_equal(member_type(info, "Cap", "state", &opt), "bool");
    assert_false(opt);
    JsonObject *b = info_entry(info, "bool");
    assert_string_equal(json_object_get_string_member(b, "meta-type"), "builtin");
    assert_string_equal(json_object_get_string_member(b, "json-type"), "boolean");
    assert_string_equal(member_type(info, arg, "color", &opt), "Color");
    assert_true(opt);
    JsonArray *vals = json_object_get_array_member(info_entry(info, "Color"),
                                                   "values");
    assert_int_equal(json_array_get_length(vals), 2);
    assert_string_equal(json_array_get_string_element(vals, 1), "blue");
    assert_string_equal(member_type(info, arg, "s", &opt), "size");
    assert_string_equal(json_object_get_string_member(info_entry(info, "size"),
                                                      "json-type"), "int");
    assert_string_equal(json_object_get_string_member(info_entry(info, "any"),
                                                      "json-type"), "value");
    /* An inline struct is an implicit object type. */
    const char *in = member_type(info, arg, "in", &opt);
    assert_string_equal(in, "q_obj_set-arg-in");
    assert_string_equal(member_type(info, in, "deep", &opt), "str");
    JsonObject *plain = info_entry(info, "plain");
    assert_string_equal(json_object_get_string_member(plain, "arg-type"), "q_empty");
    assert_false(json_object_has_member(plain, "allow-oob"));
    assert_true(json_object_get_boolean_member(info_entry(info, "oobok"),
                                               "allow-oob"));
    JsonObject *ev = info_entry(info, "EV");
    assert_string_equal(json_object_get_string_member(ev, "meta-type"), "event");
    assert_string_equal(json_object_get_string_member(ev, "arg-type"), "q_empty");
    JsonArray *none = json_object_get_array_member(info_entry(info, "q_empty"),
                                                   "members");
    assert_int_equal(json_array_get_length(none), 0);
}

/* ---- Dispatch --------------------------------------------------------------------- */

static JsonNode *cmd_echo(JsonObject *args, void *opaque, GError **errp)
{
    int *calls = opaque;
    (*calls)++;
    if (args && json_object_has_member(args, "n") &&
        json_object_get_int_member(args, "n") < 0) {
        g_set_error(errp, QMP_ERROR, QMP_ERROR_GENERIC, "n must not be negative");
        return NULL;
    }
    return json_node_init_int(json_node_alloc(), 7);
}

static char *dispatch(QmpDispatcher *d, const char *req, QmpSessionState *st)
{
    g_autoptr(JsonParser) p = json_parser_new();
    assert_true(json_parser_load_from_data(p, req, -1, NULL));
    g_autoptr(JsonObject) r = qmp_dispatch(d, json_parser_get_root(p), st);
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), r);
    return json_to_string(n, false);
}

static void expect_reply(QmpDispatcher *d, QmpSessionState *neg, const char *req,
                         const char *want)
{
    g_autofree char *got = dispatch(d, req, neg);
    assert_string_equal(got, want);
}

static void test_dispatch(void **state)
{
    (void)state;
    QmpDispatcher d = { 0 };
    int calls = 0;
    QmpSessionState neg = { .negotiating = true };

    d.schema = qapi_schema_load(test_schema, NULL);
    d.commands = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    qmp_register(&d, "set", cmd_echo, &calls);
    qmp_register(&d, "plain", cmd_echo, &calls);
    qmp_register(&d, "oobok", cmd_echo, &calls);

    /* Before negotiation, only qmp_capabilities (not in this schema). */
    expect_reply(&d, &neg, "{\"execute\":\"plain\",\"id\":1}",
                 "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"Expecting "
                 "capabilities negotiation with 'qmp_capabilities'\"},\"id\":1}");
    neg.negotiating = false;
    expect_reply(&d, &neg, "{\"execute\":\"plain\",\"id\":\"x\"}",
                 "{\"return\":7,\"id\":\"x\"}");
    expect_reply(&d, &neg, "{\"execute\":\"set\",\"arguments\":{\"caps\":[],\"n\":-1}}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"n must not be "
                 "negative\"}}");
    /* Arguments are checked before the handler runs. */
    int before = calls;
    expect_reply(&d, &neg, "{\"execute\":\"set\",\"arguments\":{\"n\":1}}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"Parameter "
                 "'caps' is missing\"}}");
    assert_int_equal(calls, before);
    expect_reply(&d, &neg, "{\"execute\":\"nope\",\"id\":[1]}",
                 "{\"error\":{\"class\":\"CommandNotFound\",\"desc\":\"The command "
                 "nope has not been found\"},\"id\":[1]}");
    expect_reply(&d, &neg, "{\"id\":2}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"QMP input "
                 "lacks member 'execute'\"},\"id\":2}");
    expect_reply(&d, &neg, "[1]",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"QMP input "
                 "must be a JSON object\"}}");
    /* exec-oob: not a member before "oob" is enabled, then only for a
     * command that allows it, as QEMU. */
    expect_reply(&d, &neg, "{\"exec-oob\":\"oobok\",\"id\":3}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"QMP input "
                 "member 'exec-oob' is unexpected\"},\"id\":3}");
    neg.oob = true;
    expect_reply(&d, &neg, "{\"exec-oob\":\"oobok\",\"id\":4}",
                 "{\"return\":7,\"id\":4}");
    expect_reply(&d, &neg, "{\"exec-oob\":\"plain\"}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"The command "
                 "plain does not support OOB\"}}");
    expect_reply(&d, &neg, "{\"execute\":\"plain\",\"exec-oob\":\"oobok\"}",
                 "{\"error\":{\"class\":\"GenericError\",\"desc\":\"QMP input "
                 "member 'exec-oob' clashes with 'execute'\"}}");
    qmp_dispatcher_cleanup(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        { "/monitor/json-stream/framing", test_framing, NULL, NULL, NULL },
        { "/monitor/json-stream/errors", test_framing_errors, NULL, NULL, NULL },
        { "/monitor/json-stream/member-raw", test_member_raw, NULL, NULL, NULL },
        { "/monitor/qmp/reply-text", test_reply_text, NULL, NULL, NULL },
        { "/monitor/qapi/check", test_schema_check, NULL, NULL, NULL },
        { "/monitor/qapi/builtin", test_builtin_schema, NULL, NULL, NULL },
        { "/monitor/qapi/introspect", test_introspect, NULL, NULL, NULL },
        { "/monitor/qmp/dispatch", test_dispatch, NULL, NULL, NULL },
    };
    return cmocka_run_group_tests_name("qmp", tests, NULL, NULL);
}
