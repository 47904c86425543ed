#ifndef TWILL_CCURL_SHIM_H
#define TWILL_CCURL_SHIM_H
// curl_easy_setopt and curl_easy_getinfo are variadic C functions, which Swift cannot call;
// these typed wrappers are the whole reason this header exists.
#include <curl/curl.h>

static inline CURLcode twill_curl_setopt_long(CURL *h, CURLoption o, long v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode twill_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode twill_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode twill_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return curl_easy_setopt(h, o, v); }
static inline CURLcode twill_curl_setopt_write_function(CURL *h, curl_write_callback f) { return curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, f); }
static inline CURLcode twill_curl_setopt_xferinfo_function(CURL *h, curl_xferinfo_callback f) { return curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }

static inline long twill_curl_response_code(CURL *h) {
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
static inline long twill_curl_connect_time_us(CURL *h) {
    curl_off_t t = 0;
    curl_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &t);
    return (long)t;
}
static inline long twill_curl_num_connects(CURL *h) {
    long n = 0;
    curl_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &n);
    return n;
}
#endif
