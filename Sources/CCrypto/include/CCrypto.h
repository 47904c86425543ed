// OpenSSL's libcrypto for the wireguard backend, loaded with dlopen at first use rather than
// linked, for the reason CCurl gives: a node that runs no wireguard backend (and every
// `twill version` or CNI call) never pays for loading it. Only the header's types are used
// at build time (libssl-dev, make deps). These are thin typed wrappers over EVP calls whose
// macros, variadic forms or by-value OSSL_PARAM structs Swift cannot use directly; the
// protocol logic lives in Swift.
#ifndef TWILL_CCRYPTO_H
#define TWILL_CCRYPTO_H
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

/// Loads libcrypto (libcrypto.so.3) once. Returns 0, or -1 with a message in `error`.
int twill_crypto_load(char *error, size_t length);

/// X25519: the public key of a (clamped by OpenSSL) private key. 0 on success.
int twill_x25519_public(uint8_t public_key[32], const uint8_t private_key[32]);
/// X25519 shared secret; -1 when OpenSSL refuses (an all-zero result, a bad point).
int twill_x25519(uint8_t shared[32], const uint8_t private_key[32], const uint8_t peer_public[32]);

/// BLAKE2s-256 of a || b (b may be empty).
int twill_blake2s256(uint8_t out[32], const void *a, size_t a_length, const void *b, size_t b_length);
/// HMAC-BLAKE2s-256 with `key` over a || b.
int twill_hmac_blake2s(uint8_t out[32], const uint8_t *key, size_t key_length,
                       const void *a, size_t a_length, const void *b, size_t b_length);
/// Keyed BLAKE2s with an output of `out_length` bytes (1-32) and a key of 1-32 bytes.
int twill_blake2s_mac(uint8_t *out, size_t out_length, const uint8_t *key, size_t key_length,
                      const void *data, size_t length);

/// A ChaCha20-Poly1305 context, reused packet after packet by one thread (NULL if out of memory).
void *twill_aead_new(void);
void twill_aead_free(void *context);
/// Encrypts `pieces` in place (their concatenation is the plaintext) with `key` and the
/// 12-byte `nonce`, authenticating `aad`; writes the 16-byte tag. 0 on success.
int twill_aead_seal(void *context, const uint8_t key[32], const uint8_t nonce[12], const void *aad, size_t aad_length,
                    const struct iovec *pieces, int count, uint8_t tag[16]);
/// Decrypts `pieces` in place and checks `tag`: 0 when authentic, -1 when not (the
/// pieces then hold garbage and must be dropped).
int twill_aead_open(void *context, const uint8_t key[32], const uint8_t nonce[12], const void *aad, size_t aad_length,
                    const struct iovec *pieces, int count, const uint8_t tag[16]);
#endif
