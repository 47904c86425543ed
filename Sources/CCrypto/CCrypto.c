#include "CCrypto.h"
#include <dlfcn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static EVP_PKEY *(*p_new_raw_private)(int, ENGINE *, const unsigned char *, size_t);
static EVP_PKEY *(*p_new_raw_public)(int, ENGINE *, const unsigned char *, size_t);
static int (*p_get_raw_public)(const EVP_PKEY *, unsigned char *, size_t *);
static void (*p_pkey_free)(EVP_PKEY *);
static EVP_PKEY_CTX *(*p_pkey_ctx_new)(EVP_PKEY *, ENGINE *);
static void (*p_pkey_ctx_free)(EVP_PKEY_CTX *);
static int (*p_derive_init)(EVP_PKEY_CTX *);
static int (*p_derive_set_peer)(EVP_PKEY_CTX *, EVP_PKEY *);
static int (*p_derive)(EVP_PKEY_CTX *, unsigned char *, size_t *);
static const EVP_MD *(*p_blake2s256)(void);
static EVP_MD_CTX *(*p_md_ctx_new)(void);
static void (*p_md_ctx_free)(EVP_MD_CTX *);
static int (*p_digest_init)(EVP_MD_CTX *, const EVP_MD *, ENGINE *);
static int (*p_digest_update)(EVP_MD_CTX *, const void *, size_t);
static int (*p_digest_final)(EVP_MD_CTX *, unsigned char *, unsigned int *);
static EVP_MAC *(*p_mac_fetch)(OSSL_LIB_CTX *, const char *, const char *);
static EVP_MAC_CTX *(*p_mac_ctx_new)(EVP_MAC *);
static void (*p_mac_ctx_free)(EVP_MAC_CTX *);
static int (*p_mac_init)(EVP_MAC_CTX *, const unsigned char *, size_t, const OSSL_PARAM *);
static int (*p_mac_update)(EVP_MAC_CTX *, const unsigned char *, size_t);
static int (*p_mac_final)(EVP_MAC_CTX *, unsigned char *, size_t *, size_t);
static OSSL_PARAM (*p_param_utf8)(const char *, char *, size_t);
static OSSL_PARAM (*p_param_size_t)(const char *, size_t *);
static OSSL_PARAM (*p_param_end)(void);
static EVP_CIPHER_CTX *(*p_cipher_ctx_new)(void);
static void (*p_cipher_ctx_free)(EVP_CIPHER_CTX *);
static const EVP_CIPHER *(*p_chacha20_poly1305)(void);
static int (*p_cipher_init)(EVP_CIPHER_CTX *, const EVP_CIPHER *, ENGINE *, const unsigned char *, const unsigned char *, int);
static int (*p_cipher_update)(EVP_CIPHER_CTX *, unsigned char *, int *, const unsigned char *, int);
static int (*p_cipher_final)(EVP_CIPHER_CTX *, unsigned char *, int *);
static int (*p_cipher_ctrl)(EVP_CIPHER_CTX *, int, int, void *);

static EVP_MAC *hmac;
static EVP_MAC *blake2smac;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[256];
static int loaded = -1;

static void load(void) {
    void *h = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(load_error, sizeof load_error, "cannot load libcrypto.so.3 (install libssl3): %s", dlerror());
        return;
    }
#define SYM(var, name) if (!(*(void **)&var = dlsym(h, name))) { snprintf(load_error, sizeof load_error, "libcrypto lacks %s", name); return; }
    SYM(p_new_raw_private, "EVP_PKEY_new_raw_private_key")
    SYM(p_new_raw_public, "EVP_PKEY_new_raw_public_key")
    SYM(p_get_raw_public, "EVP_PKEY_get_raw_public_key")
    SYM(p_pkey_free, "EVP_PKEY_free")
    SYM(p_pkey_ctx_new, "EVP_PKEY_CTX_new")
    SYM(p_pkey_ctx_free, "EVP_PKEY_CTX_free")
    SYM(p_derive_init, "EVP_PKEY_derive_init")
    SYM(p_derive_set_peer, "EVP_PKEY_derive_set_peer")
    SYM(p_derive, "EVP_PKEY_derive")
    SYM(p_blake2s256, "EVP_blake2s256")
    SYM(p_md_ctx_new, "EVP_MD_CTX_new")
    SYM(p_md_ctx_free, "EVP_MD_CTX_free")
    SYM(p_digest_init, "EVP_DigestInit_ex")
    SYM(p_digest_update, "EVP_DigestUpdate")
    SYM(p_digest_final, "EVP_DigestFinal_ex")
    SYM(p_mac_fetch, "EVP_MAC_fetch")
    SYM(p_mac_ctx_new, "EVP_MAC_CTX_new")
    SYM(p_mac_ctx_free, "EVP_MAC_CTX_free")
    SYM(p_mac_init, "EVP_MAC_init")
    SYM(p_mac_update, "EVP_MAC_update")
    SYM(p_mac_final, "EVP_MAC_final")
    SYM(p_param_utf8, "OSSL_PARAM_construct_utf8_string")
    SYM(p_param_size_t, "OSSL_PARAM_construct_size_t")
    SYM(p_param_end, "OSSL_PARAM_construct_end")
    SYM(p_cipher_ctx_new, "EVP_CIPHER_CTX_new")
    SYM(p_cipher_ctx_free, "EVP_CIPHER_CTX_free")
    SYM(p_chacha20_poly1305, "EVP_chacha20_poly1305")
    SYM(p_cipher_init, "EVP_CipherInit_ex")
    SYM(p_cipher_update, "EVP_CipherUpdate")
    SYM(p_cipher_final, "EVP_CipherFinal_ex")
    SYM(p_cipher_ctrl, "EVP_CIPHER_CTX_ctrl")
#undef SYM
    hmac = p_mac_fetch(NULL, "HMAC", NULL);
    blake2smac = p_mac_fetch(NULL, "BLAKE2SMAC", NULL);
    if (!hmac || !blake2smac) {
        snprintf(load_error, sizeof load_error, "libcrypto lacks HMAC or BLAKE2SMAC (OpenSSL 3 is needed)");
        return;
    }
    loaded = 0;
}

int twill_crypto_load(char *error, size_t length) {
    pthread_once(&once, load);
    if (loaded != 0 && error && length) snprintf(error, length, "%s", load_error);
    return loaded;
}

int twill_x25519_public(uint8_t public_key[32], const uint8_t private_key[32]) {
    EVP_PKEY *k = p_new_raw_private(EVP_PKEY_X25519, NULL, private_key, 32);
    if (!k) return -1;
    size_t n = 32;
    int ok = p_get_raw_public(k, public_key, &n) == 1 && n == 32;
    p_pkey_free(k);
    return ok ? 0 : -1;
}

int twill_x25519(uint8_t shared[32], const uint8_t private_key[32], const uint8_t peer_public[32]) {
    int result = -1;
    EVP_PKEY *k = p_new_raw_private(EVP_PKEY_X25519, NULL, private_key, 32);
    EVP_PKEY *peer = p_new_raw_public(EVP_PKEY_X25519, NULL, peer_public, 32);
    EVP_PKEY_CTX *ctx = k ? p_pkey_ctx_new(k, NULL) : NULL;
    size_t n = 32;
    if (ctx && peer && p_derive_init(ctx) == 1 && p_derive_set_peer(ctx, peer) == 1 && p_derive(ctx, shared, &n) == 1 && n == 32) result = 0;
    if (ctx) p_pkey_ctx_free(ctx);
    if (peer) p_pkey_free(peer);
    if (k) p_pkey_free(k);
    return result;
}

int twill_blake2s256(uint8_t out[32], const void *a, size_t a_length, const void *b, size_t b_length) {
    EVP_MD_CTX *ctx = p_md_ctx_new();
    if (!ctx) return -1;
    unsigned int n = 0;
    int ok = p_digest_init(ctx, p_blake2s256(), NULL) == 1 && p_digest_update(ctx, a, a_length) == 1
        && (b_length == 0 || p_digest_update(ctx, b, b_length) == 1) && p_digest_final(ctx, out, &n) == 1 && n == 32;
    p_md_ctx_free(ctx);
    return ok ? 0 : -1;
}

static int mac(EVP_MAC *algorithm, OSSL_PARAM *params, uint8_t *out, size_t out_length, const uint8_t *key, size_t key_length,
               const void *a, size_t a_length, const void *b, size_t b_length) {
    EVP_MAC_CTX *ctx = p_mac_ctx_new(algorithm);
    if (!ctx) return -1;
    size_t n = 0;
    int ok = p_mac_init(ctx, key, key_length, params) == 1 && p_mac_update(ctx, a, a_length) == 1
        && (b_length == 0 || p_mac_update(ctx, b, b_length) == 1) && p_mac_final(ctx, out, &n, out_length) == 1 && n == out_length;
    p_mac_ctx_free(ctx);
    return ok ? 0 : -1;
}

int twill_hmac_blake2s(uint8_t out[32], const uint8_t *key, size_t key_length,
                       const void *a, size_t a_length, const void *b, size_t b_length) {
    char digest[] = "BLAKE2S-256";
    OSSL_PARAM params[2] = { p_param_utf8(OSSL_MAC_PARAM_DIGEST, digest, 0), p_param_end() };
    return mac(hmac, params, out, 32, key, key_length, a, a_length, b, b_length);
}

int twill_blake2s_mac(uint8_t *out, size_t out_length, const uint8_t *key, size_t key_length, const void *data, size_t length) {
    size_t size = out_length;
    OSSL_PARAM params[2] = { p_param_size_t(OSSL_MAC_PARAM_SIZE, &size), p_param_end() };
    return mac(blake2smac, params, out, out_length, key, key_length, data, length, NULL, 0);
}

struct aead { EVP_CIPHER_CTX *ctx; int direction; };

void *twill_aead_new(void) {
    struct aead *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->ctx = p_cipher_ctx_new();
    if (!a->ctx) { free(a); return NULL; }
    a->direction = -1;
    return a;
}

void twill_aead_free(void *context) {
    struct aead *a = context;
    if (!a) return;
    p_cipher_ctx_free(a->ctx);
    free(a);
}

static int crypt(struct aead *a, int encrypt, const uint8_t key[32], const uint8_t nonce[12], const void *aad, size_t aad_length,
                 const struct iovec *pieces, int count) {
    // The cipher is set once per context; after that only key and nonce change, which for
    // ChaCha20 costs no key schedule.
    if (a->direction != encrypt) {
        if (p_cipher_init(a->ctx, p_chacha20_poly1305(), NULL, NULL, NULL, encrypt) != 1) return -1;
        a->direction = encrypt;
    }
    if (p_cipher_init(a->ctx, NULL, NULL, key, nonce, encrypt) != 1) return -1;
    int n = 0;
    if (aad_length > 0 && p_cipher_update(a->ctx, NULL, &n, aad, (int)aad_length) != 1) return -1;
    for (int i = 0; i < count; i++) {
        if (pieces[i].iov_len == 0) continue;
        if (p_cipher_update(a->ctx, pieces[i].iov_base, &n, pieces[i].iov_base, (int)pieces[i].iov_len) != 1) return -1;
    }
    return 0;
}

int twill_aead_seal(void *context, const uint8_t key[32], const uint8_t nonce[12], const void *aad, size_t aad_length,
                    const struct iovec *pieces, int count, uint8_t tag[16]) {
    struct aead *a = context;
    int n = 0;
    uint8_t none[16];
    if (crypt(a, 1, key, nonce, aad, aad_length, pieces, count) != 0) return -1;
    if (p_cipher_final(a->ctx, none, &n) != 1) return -1;
    return p_cipher_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag) == 1 ? 0 : -1;
}

int twill_aead_open(void *context, const uint8_t key[32], const uint8_t nonce[12], const void *aad, size_t aad_length,
                    const struct iovec *pieces, int count, const uint8_t tag[16]) {
    struct aead *a = context;
    int n = 0;
    uint8_t none[16];
    if (crypt(a, 0, key, nonce, aad, aad_length, pieces, count) != 0) return -1;
    if (p_cipher_ctrl(a->ctx, EVP_CTRL_AEAD_SET_TAG, 16, (void *)tag) != 1) return -1;
    return p_cipher_final(a->ctx, none, &n) == 1 ? 0 : -1;
}
