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

char *json_stream_member_raw(const char *text, const char *name)
{
    size_t nlen = strlen(name);
    int depth = 0;
    const char *p = text;
    while (*p && *p != '{') {
        p++;
    }
    if (!*p) {
        return NULL;
    }
    for (p++, depth = 1; *p && depth > 0;) {
        if (*p == '"') {
            /* A string: a member's name when at depth 1 and a ':' follows. */
            const char *start = ++p;
            while (*p && *p != '"') {
                p += *p == '\\' && p[1] ? 2 : 1;
            }
            size_t len = p - start;
            if (*p) {
                p++;
            }
            const char *q = p;
            while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n') {
                q++;
            }
            if (depth != 1 || *q != ':') {
                continue;
            }
            q++;
            while (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\n') {
                q++;
            }
            /* The value: up to the ',' or '}' that ends it at depth 1. */
            const char *v = q;
            int d = 0;
            bool in_str = false;
            for (; *q; q++) {
                if (in_str) {
                    if (*q == '\\' && q[1]) {
                        q++;
                    } else if (*q == '"') {
                        in_str = false;
                    }
                } else if (*q == '"') {
                    in_str = true;
                } else if (*q == '{' || *q == '[') {
                    d++;
                } else if (*q == '}' || *q == ']') {
                    if (d == 0) {
                        break;
                    }
                    d--;
                } else if (*q == ',' && d == 0) {
                    break;
                }
            }
            const char *e = q;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' ||
                             e[-1] == '\n')) {
                e--;
            }
            if (len == nlen && !strncmp(start, name, nlen)) {
                return g_strndup(v, e - v);
            }
            p = q;
            continue;
        }
        if (*p == '{' || *p == '[') {
            depth++;
        } else if (*p == '}' || *p == ']') {
            depth--;
        }
        p++;
    }
    return NULL;
}
