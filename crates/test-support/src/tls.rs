//! TLS stand-ins: a test CA made with the openssl command line, an HTTPS server that
//! trusts nothing but answers everything, and the aiosmtpd sink with TLS and AUTH.

use crate::smtp::{SmtpSink, smtp_sink_with};

/// A CA and a certificate it signed for 127.0.0.1, made with the openssl command line.
pub fn test_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=waymark test CA",
            "-days",
            "2",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// A real HTTPS server (Python's http.server behind its ssl module) that answers every POST
/// with `{"tls": true, "calls": n}`; killed when dropped.
pub struct HttpsSink {
    pub child: std::process::Child,
    pub url: String,
}

impl Drop for HttpsSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn https_sink(cert: &std::path::Path, key: &std::path::Path) -> HttpsSink {
    use std::io::BufRead;
    const SCRIPT: &str = r#"
import http.server, json, ssl, sys
calls = 0
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        global calls
        calls += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"tls": True, "calls": calls}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(cert)
        .arg(key)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("port");
    let port: u16 = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no port: {line:?}"));
    HttpsSink {
        child,
        url: format!("https://127.0.0.1:{port}/hook"),
    }
}

/// An aiosmtpd sink with TLS (from the first byte if `implicit`, else STARTTLS required)
/// and AUTH required as `bot` / `s3cret`, and the CA its certificate chains to.
pub fn tls_smtp_sink(dir: &std::path::Path, implicit: bool) -> (SmtpSink, std::path::PathBuf) {
    let (ca, cert, key) = test_ca(dir);
    let (cert, key) = (cert.to_str().expect("utf-8"), key.to_str().expect("utf-8"));
    let mut args = vec![cert, key, "bot", "s3cret"];
    if implicit {
        args.push("implicit");
    }
    (smtp_sink_with(&args), ca)
}
