/* PEM files named by a configuration; see pem_check.h. */
#include "config/pem_check.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>

bool pem_check_pair(const char *cert, const char *key, const char **why)
{
    FILE *fc = fopen(cert, "r"), *fk = fopen(key, "r");
    X509 *x = fc ? PEM_read_X509(fc, NULL, NULL, NULL) : NULL;
    EVP_PKEY *k = fk ? PEM_read_PrivateKey(fk, NULL, NULL, NULL) : NULL;
    bool ok = false;
    if (!x)
        *why = "cert is not a PEM certificate";
    else if (!k)
        *why = "key is not a PEM private key (unencrypted)";
    else if (X509_check_private_key(x, k) != 1)
        *why = "key does not belong to the certificate";
    else
        ok = true;
    ERR_clear_error();
    X509_free(x);
    EVP_PKEY_free(k);
    if (fc)
        fclose(fc);
    if (fk)
        fclose(fk);
    return ok;
}
