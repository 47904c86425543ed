#include "CCurl.h"
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

static CURLcode (*p_global_init)(long);
static CURL *(*p_easy_init)(void);
static void (*p_easy_cleanup)(CURL *);
static void (*p_easy_reset)(CURL *);
static CURLcode (*p_easy_perform)(CURL *);
static const char *(*p_easy_strerror)(CURLcode);
static struct curl_slist *(*p_slist_append)(struct curl_slist *, const char *);
static void (*p_slist_free_all)(struct curl_slist *);
static CURLcode (*p_easy_setopt)(CURL *, CURLoption, ...);
static CURLcode (*p_easy_getinfo)(CURL *, CURLINFO, ...);

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];
static int loaded = -1;

static void load(void) {
    void *h = dlopen("libcurl.so.4", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libcurl.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error, "cannot load libcurl (install libcurl4): %s", dlerror());
        return;
    }
#define SYM(var, name) if (!(*(void **)&var = dlsym(h, name))) { snprintf(load_error, sizeof load_error, "libcurl lacks %s", name); return; }
    SYM(p_global_init, "curl_global_init")
    SYM(p_easy_init, "curl_easy_init")
    SYM(p_easy_cleanup, "curl_easy_cleanup")
    SYM(p_easy_reset, "curl_easy_reset")
    SYM(p_easy_perform, "curl_easy_perform")
    SYM(p_easy_strerror, "curl_easy_strerror")
    SYM(p_slist_append, "curl_slist_append")
    SYM(p_slist_free_all, "curl_slist_free_all")
    SYM(p_easy_setopt, "curl_easy_setopt")
    SYM(p_easy_getinfo, "curl_easy_getinfo")
#undef SYM
    if (p_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        snprintf(load_error, sizeof load_error, "curl_global_init failed");
        return;
    }
    loaded = 0;
}

int twill_curl_load(char *error, size_t length) {
    pthread_once(&once, load);
    if (loaded != 0 && error && length) snprintf(error, length, "%s", load_error);
    return loaded;
}

CURL *twill_curl_easy_init(void) { return p_easy_init(); }
void twill_curl_easy_cleanup(CURL *h) { p_easy_cleanup(h); }
void twill_curl_easy_reset(CURL *h) { p_easy_reset(h); }
CURLcode twill_curl_easy_perform(CURL *h) { return p_easy_perform(h); }
const char *twill_curl_easy_strerror(CURLcode code) { return p_easy_strerror(code); }
struct curl_slist *twill_curl_slist_append(struct curl_slist *list, const char *value) { return p_slist_append(list, value); }
void twill_curl_slist_free_all(struct curl_slist *list) { p_slist_free_all(list); }

CURLcode twill_curl_setopt_long(CURL *h, CURLoption o, long v) { return p_easy_setopt(h, o, v); }
CURLcode twill_curl_setopt_string(CURL *h, CURLoption o, const char *v) { return p_easy_setopt(h, o, v); }
CURLcode twill_curl_setopt_pointer(CURL *h, CURLoption o, void *v) { return p_easy_setopt(h, o, v); }
CURLcode twill_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v) { return p_easy_setopt(h, o, v); }
CURLcode twill_curl_setopt_write_function(CURL *h, curl_write_callback f) { return p_easy_setopt(h, CURLOPT_WRITEFUNCTION, f); }
CURLcode twill_curl_setopt_xferinfo_function(CURL *h, curl_xferinfo_callback f) { return p_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, f); }

long twill_curl_response_code(CURL *h) {
    long code = 0;
    p_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    return code;
}
long twill_curl_connect_time_us(CURL *h) {
    curl_off_t t = 0;
    p_easy_getinfo(h, CURLINFO_CONNECT_TIME_T, &t);
    return (long)t;
}
long twill_curl_num_connects(CURL *h) {
    long n = 0;
    p_easy_getinfo(h, CURLINFO_NUM_CONNECTS, &n);
    return n;
}
