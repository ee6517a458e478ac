#include "ps/tls.h"

#include <fstream>
#include <iterator>

#include "core/error.h"

namespace qgrad::ps {

std::string read_pem_file(const std::string& path, const char* flag) {
  std::ifstream f(path, std::ios::binary);
  QGRAD_CHECK(f.good(), flag, ": cannot read '", path, "'");
  std::string pem((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  QGRAD_CHECK(pem.find("-----BEGIN ") != std::string::npos, flag, ": '", path,
              "' holds no PEM block (-----BEGIN ...)");
  return pem;
}

ServerTls load_server_tls(const std::string& cert, const std::string& key, const std::string& ca) {
  QGRAD_CHECK(cert.empty() == key.empty(),
              "ParameterServer: TLS needs both the certificate (--tls-cert) and its key "
              "(--tls-key)");
  QGRAD_CHECK(ca.empty() || !cert.empty(),
              "ParameterServer: --tls-ca (client certificates) needs --tls-cert and --tls-key");
  ServerTls tls;
  if (cert.empty()) return tls;
  tls.enabled = true;
  // The key first, as the server always read them: with both unreadable, the error names it.
  tls.key_pem = read_pem_file(key, "--tls-key");
  tls.cert_pem = read_pem_file(cert, "--tls-cert");
  if (!ca.empty()) tls.client_ca_pem = read_pem_file(ca, "--tls-ca");
  return tls;
}

}  // namespace qgrad::ps
