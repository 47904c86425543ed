// libcurl for TwillEtcd, loaded with dlopen at first use rather than linked: libcurl brings
// some thirty shared libraries (TLS, HTTP/2, Kerberos, LDAP...), and a binary linked to it
// pays for loading and binding all of them at every start, even `twill version` and every
// CNI call, which never talk to etcd. Only the header's types and constants are used at
// build time. curl_easy_setopt and curl_easy_getinfo are variadic, which Swift cannot call:
// these typed wrappers stand in for them. No logic lives here.
#ifndef TWILL_CCURL_H
#define TWILL_CCURL_H
#include <curl/curl.h>
#include <stddef.h>

/// Loads libcurl (libcurl.so.4) and calls curl_global_init once. Returns 0, or -1 with a
/// message in `error` saying what is missing.
int twill_curl_load(char *error, size_t length);

CURL *twill_curl_easy_init(void);
void twill_curl_easy_cleanup(CURL *h);
void twill_curl_easy_reset(CURL *h);
CURLcode twill_curl_easy_perform(CURL *h);
const char *twill_curl_easy_strerror(CURLcode code);
struct curl_slist *twill_curl_slist_append(struct curl_slist *list, const char *value);
void twill_curl_slist_free_all(struct curl_slist *list);

CURLcode twill_curl_setopt_long(CURL *h, CURLoption o, long v);
CURLcode twill_curl_setopt_string(CURL *h, CURLoption o, const char *v);
CURLcode twill_curl_setopt_pointer(CURL *h, CURLoption o, void *v);
CURLcode twill_curl_setopt_slist(CURL *h, CURLoption o, struct curl_slist *v);
CURLcode twill_curl_setopt_write_function(CURL *h, curl_write_callback f);
CURLcode twill_curl_setopt_xferinfo_function(CURL *h, curl_xferinfo_callback f);

long twill_curl_response_code(CURL *h);
long twill_curl_connect_time_us(CURL *h);
long twill_curl_num_connects(CURL *h);
#endif
