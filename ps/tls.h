// TLS material for both ends of the parameter-server connection: reading PEM files (the client's
// CA and certificate, the server's certificate, key and client CA) with errors that name the
// flag and the file, and the server's choice between plaintext, TLS and mutual TLS. gRPC-free:
// the client (ps/client.cc) and the service glue (ps/server.cc) turn the PEM text into gRPC
// credentials.
// Thread-safety: functions of their arguments (and the files).
#pragma once

#include <string>

namespace qgrad::ps {

// The content of a PEM file; InvalidArgument naming the flag and the file when it cannot be read
// or holds no PEM block.
std::string read_pem_file(const std::string& path, const char* flag);

// The server's TLS set-up: no certificate (plaintext), a certificate and its key (TLS: plain
// clients cannot connect), or those and a CA (mutual TLS: every client must present a
// certificate signed by that CA).
struct ServerTls {
  bool enabled = false;
  std::string cert_pem, key_pem;
  std::string client_ca_pem;  // empty: no client certificate required
};

// Checks that the files go together (InvalidArgument naming the missing flag) and reads them.
// Paths are those of ServerOptions::tls_cert, tls_key, tls_ca ("" for none).
ServerTls load_server_tls(const std::string& cert, const std::string& key, const std::string& ca);

}  // namespace qgrad::ps
