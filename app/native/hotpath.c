/* modelport's native hot path: two loops over bytes that numpy can only do in several passes.
 * Each has a Python path beside it (app/native/__init__.py), used where this was not compiled.
 *
 * 1. modelport_read_float_rows: the data lines of an all-float CSV upload, straight to a
 *    float64 matrix, in one pass. It accepts only what it can read exactly and leaves every
 *    other file to the Python readers (a return of -1 means "in doubt", never "invalid"):
 *    - cells: JSON's number grammar, `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`, with
 *      no spaces or quotes; every line exactly `width` cells; lines end in "\n" or "\r\n" (or
 *      the end of the text); no blank lines.
 *    - values: only those Clinger's fast path rounds exactly: a decimal mantissa of at most
 *      2^53 scaled by at most 10^22 either way (both exact doubles, so one IEEE multiplication
 *      or division rounds the true value correctly, as Python's float() does). Zero at any
 *      scale. Longer mantissas and larger exponents are in doubt.
 * 2. modelport_gather: byte ranges of one buffer, copied one after another into another (the
 *    JSON reply's rows, laid out from its columns' fragments; app/replies.py).
 * Every read is checked against its buffer's length, and every write against the output's.
 */
#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(FLT_EVAL_METHOD) || FLT_EVAL_METHOD != 0
#error "exact rounding needs double arithmetic evaluated in double precision (SSE2, not x87)"
#endif

#define IN_DOUBT (-1)
#define MAX_EXACT_MANTISSA (((uint64_t)1) << 53)
#define MAX_SIGNIFICANT_DIGITS 19 /* 10^19 - 1 still fits in uint64_t */
#define MAX_EXACT_POWER 22
#define MAX_WRITTEN_EXPONENT 100000 /* far beyond float64's range: caps the arithmetic */

static const double POWERS_OF_TEN[MAX_EXACT_POWER + 1] = {
    1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static int is_digit(const unsigned char *p, const unsigned char *end) {
    return p < end && (unsigned)(*p - '0') <= 9;
}

/* Bumped whenever a signature or the accepted grammar changes: the loader refuses a library
 * built from another version of this file. */
int modelport_hotpath_version(void) { return 1; }

/* The number of lines in text[start:length]: each "\n", plus a last line without one. */
size_t modelport_count_lines(const unsigned char *text, size_t start, size_t length) {
    size_t lines = 0;
    if (start > length) return 0;
    const unsigned char *p = text + start, *end = text + length;
    while (p < end) {
        const unsigned char *newline = memchr(p, '\n', (size_t)(end - p));
        if (newline == NULL) return lines + 1;
        lines++;
        p = newline + 1;
    }
    return lines;
}

/* One cell at *cursor; advances past it. 0 on success, IN_DOUBT otherwise. */
static int read_number(const unsigned char **cursor, const unsigned char *end, double *value) {
    const unsigned char *p = *cursor;
    int negative = 0;
    if (p < end && *p == '-') {
        negative = 1;
        p++;
    }
    if (!is_digit(p, end)) return IN_DOUBT;
    uint64_t mantissa = 0;
    int significant = 0; /* digits from the first non-zero one on */
    long exponent = 0;
    if (*p == '0') {
        p++; /* JSON allows no other leading zero */
    } else {
        while (is_digit(p, end)) {
            if (significant == MAX_SIGNIFICANT_DIGITS) return IN_DOUBT;
            mantissa = mantissa * 10 + (uint64_t)(*p - '0');
            significant++;
            p++;
        }
    }
    if (p < end && *p == '.') {
        p++;
        if (!is_digit(p, end)) return IN_DOUBT;
        while (is_digit(p, end)) {
            if (significant == MAX_SIGNIFICANT_DIGITS) return IN_DOUBT;
            mantissa = mantissa * 10 + (uint64_t)(*p - '0');
            if (mantissa != 0) significant++;
            exponent--;
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        int negative_exponent = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            negative_exponent = *p == '-';
            p++;
        }
        if (!is_digit(p, end)) return IN_DOUBT;
        long written = 0;
        while (is_digit(p, end)) {
            if (written > MAX_WRITTEN_EXPONENT) return IN_DOUBT;
            written = written * 10 + (*p - '0');
            p++;
        }
        exponent += negative_exponent ? -written : written;
    }
    double magnitude;
    if (mantissa == 0) {
        magnitude = 0.0;
    } else if (mantissa > MAX_EXACT_MANTISSA || exponent < -MAX_EXACT_POWER ||
               exponent > MAX_EXACT_POWER) {
        return IN_DOUBT;
    } else if (exponent < 0) {
        magnitude = (double)mantissa / POWERS_OF_TEN[-exponent];
    } else {
        magnitude = (double)mantissa * POWERS_OF_TEN[exponent];
    }
    *value = negative ? -magnitude : magnitude;
    *cursor = p;
    return 0;
}

/* Reads text[start:length] into `out` (row-major, `width` per row, room for `capacity_rows`
 * rows). Returns the number of rows, or IN_DOUBT. */
long modelport_read_float_rows(const unsigned char *text, size_t start, size_t length,
                               size_t width, double *out, size_t capacity_rows) {
    size_t rows = 0;
    if (width == 0 || start > length) return IN_DOUBT;
    const unsigned char *p = text + start, *end = text + length;
    while (p < end) {
        if (rows == capacity_rows) return IN_DOUBT;
        double *row = out + rows * width;
        for (size_t column = 0; column < width; column++) {
            if (read_number(&p, end, &row[column]) != 0) return IN_DOUBT;
            if (column + 1 < width) {
                if (p == end || *p != ',') return IN_DOUBT;
                p++;
            }
        }
        if (p < end && *p == '\r') p++;
        if (p < end) {
            if (*p != '\n') return IN_DOUBT;
            p++;
        }
        rows++;
    }
    return (long)rows;
}

/* Copies source[starts[i] : starts[i] + lengths[i]] for each i, in order, to `out`. Returns the
 * bytes written, or -1 (nothing promised about `out`) when a range falls outside `source` or
 * the total would not fit in `capacity`. */
long modelport_gather(const unsigned char *source, size_t source_length, const int64_t *starts,
                      const int64_t *lengths, size_t count, unsigned char *out,
                      size_t capacity) {
    size_t written = 0;
    for (size_t i = 0; i < count; i++) {
        int64_t start = starts[i], length = lengths[i];
        if (start < 0 || length < 0 || (uint64_t)start > source_length ||
            (uint64_t)length > source_length - (uint64_t)start ||
            (uint64_t)length > capacity - written)
            return -1;
        memcpy(out + written, source + start, (size_t)length);
        written += (size_t)length;
    }
    return (long)written;
}
