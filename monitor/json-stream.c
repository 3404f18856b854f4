/* SPDX-License-Identifier: GPL-2.0-or-later */
/* JSON text splitter; the contract is in include/monitor/json-stream.h. */
#include "monitor/json-stream.h"

#include <string.h>

void json_stream_init(JsonStream *s)
{
    s->buf = g_string_new(NULL);
    s->depth = 0;
    s->in_string = s->escape = s->skipping = false;
    s->overflow = NULL;
}

/* Bytes that may appear outside strings: punctuation, numbers, and the
 * letters of true, false and null. */
static bool json_byte(char c)
{
    return strchr("{}[],: \t\r\n0123456789+-.eEtrufalsn", c) != NULL && c;
}

void json_stream_cleanup(JsonStream *s)
{
    g_string_free(s->buf, true);
    s->buf = NULL;
}

static void reset(JsonStream *s)
{
    g_string_truncate(s->buf, 0);
    s->depth = 0;
    s->in_string = s->escape = false;
    s->overflow = NULL;
}

static void emit(JsonStream *s, JsonStreamFunc fn, void *opaque)
{
    if (s->overflow) {
        fn(opaque, NULL, s->overflow);
    } else {
        fn(opaque, s->buf->str, NULL);
    }
    reset(s);
}

void json_stream_feed(JsonStream *s, const char *data, size_t len,
                      JsonStreamFunc fn, void *opaque)
{
    for (size_t i = 0; i < len; i++) {
        char c = data[i];

        if (s->skipping) {
            s->skipping = c != '\n';
            continue;
        }
        if (!s->in_string && c != '"' && !json_byte(c)) {
            fn(opaque, NULL, "JSON parse error, invalid character");
            reset(s);
            s->skipping = c != '\n';
            continue;
        }
        if (!s->overflow) {
            if (s->buf->len >= JSON_STREAM_MAX_SIZE) {
                s->overflow = "JSON message too large";
            } else {
                g_string_append_c(s->buf, c);
            }
        }
        if (s->in_string) {
            if (s->escape) {
                s->escape = false;
            } else if (c == '\\') {
                s->escape = true;
            } else if (c == '"') {
                s->in_string = false;
                if (s->depth == 0) {
                    emit(s, fn, opaque);        /* a bare top-level string */
                }
            }
            continue;
        }
        switch (c) {
        case '"':
            s->in_string = true;
            break;
        case '{':
        case '[':
            if (++s->depth > JSON_STREAM_MAX_DEPTH) {
                /* Answered at once, as QEMU: a text never closed would
                 * take every later command with it.  The rest of the
                 * line is skipped. */
                fn(opaque, NULL, "JSON nesting depth limit exceeded");
                reset(s);
                s->skipping = c != '\n';
            }
            break;
        case '}':
        case ']':
            if (s->depth > 0 && --s->depth == 0) {
                emit(s, fn, opaque);
            } else if (s->depth == 0) {
                emit(s, fn, opaque);            /* a stray closer: an error */
            }
            break;
        case ' ': case '\t': case '\r': case '\n':
            if (s->depth == 0) {
                /* Between texts: keep nothing; end a bare scalar. */
                g_string_truncate(s->buf, s->buf->len ? s->buf->len - 1 : 0);
                if (s->buf->len) {
                    emit(s, fn, opaque);
                }
            }
            break;
        default:
            break;
        }
    }
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
        p++;
    }
    return p;
}

/* Past the string that opens at @p ('"'), or at the text's end. */
static const char *skip_string(const char *p)
{
    for (p++; *p && *p != '"'; p += *p == '\\' && p[1] ? 2 : 1) {
    }
    return *p ? p + 1 : p;
}

/* The end of the value at @p: the ',' '}' or ']' that closes it. */
static const char *value_end(const char *p)
{
    for (int depth = 0; *p; ) {
        if (*p == '"') {
            p = skip_string(p);
            continue;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if ((*p == '}' || *p == ']') && depth-- == 0) {
            break;
        } else if (*p == ',' && depth == 0) {
            break;
        }
        p++;
    }
    return p;
}

char *json_stream_member_raw(const char *text, const char *name)
{
    const char *p = strchr(text, '{');
    if (!p) {
        return NULL;
    }
    /* The top-level object's members: name, ':', value, ','. */
    for (p = skip_ws(p + 1); *p == '"'; p = skip_ws(p + 1)) {
        const char *key = p + 1, *end = skip_string(p);
        const char *v = skip_ws(end);
        if (*v != ':') {
            return NULL;
        }
        v = skip_ws(v + 1);
        p = value_end(v);
        if ((size_t)(end - 1 - key) == strlen(name) &&
            !strncmp(key, name, end - 1 - key)) {
            const char *e = p;
            while (e > v && strchr(" \t\r\n", e[-1])) {
                e--;
            }
            return g_strndup(v, e - v);
        }
        if (*p != ',') {
            return NULL;
        }
    }
    return NULL;
}
