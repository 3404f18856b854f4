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
            if (++s->depth > JSON_STREAM_MAX_DEPTH && !s->overflow) {
                s->overflow = "JSON nesting too deep";
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
