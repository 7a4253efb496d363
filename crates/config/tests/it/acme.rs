//! `acme:` on HTTPS listeners: names taken from the rules, and every mistake at its line and
//! column with what to do.

use config::parse_cutover_file;
use expect_test::expect;
use routes::acme::Challenge;

use crate::check;

const RULES: &str = "
        rules:
          - priority: 1
            conditions: [{ host_header: [Api.Example.com, www.example.com] }]
            action: { fixed_response: { status_code: 200 } }
          - priority: 2
            conditions: [{ host_header: [api.example.com] }, { path_pattern: [/x] }]
            action: { fixed_response: { status_code: 200 } }
        default_action: { fixed_response: { status_code: 404 } }
";

#[test]
fn acme_certifies_the_rules_host_names_once_each_without_a_certificate_file() {
    let text = format!(
        "
load_balancers:
  - name: edge
    listeners:
      - name: http
        port: 80
        default_action: {{ fixed_response: {{ status_code: 404 }} }}
      - name: https
        port: 443
        protocol: HTTPS
        acme:
          directory: https://acme.example.net/dir
          email: ops@example.com
          ca_bundle: ca.pem{RULES}"
    );
    check(
        "cutover.yaml",
        &text,
        expect![[r#"
        ok
    "#]],
    );
    let parsed = parse_cutover_file("cutover.yaml", &text).unwrap().value;
    let tls = parsed.load_balancers[0].listeners[1].tls.clone().unwrap();
    let acme = tls.acme.unwrap();
    assert_eq!(acme.names, ["api.example.com", "www.example.com"]);
    assert_eq!(acme.challenge, Challenge::Http01, "http-01 is the default");
    assert_eq!(acme.email.as_deref(), Some("ops@example.com"));
    assert_eq!(acme.ca_bundle.as_deref(), Some("ca.pem"));
    assert_eq!(tls.certificate_file, "", "the default certificate is set by apply");
}

#[test]
fn acme_mistakes_are_reported_at_their_line_and_column() {
    let text = "
load_balancers:
  - name: edge
    listeners:
      - name: https
        port: 8443
        protocol: HTTPS
        acme:
          directory: http://acme.example.net/dir
          email: ops
          challenge: dns-01
        default_action: { fixed_response: { status_code: 404 } }
      - name: wild
        port: 8444
        protocol: HTTPS
        acme: { directory: https://ca/dir, challenge: tls-alpn-01 }
        rules:
          - priority: 1
            conditions: [{ host_header: ['*.example.com', 10.0.0.1, localhost] }]
            action: { fixed_response: { status_code: 200 } }
        default_action: { fixed_response: { status_code: 404 } }
      - name: plain
        port: 8080
        acme: { directory: https://ca/dir }
        default_action: { fixed_response: { status_code: 404 } }
  - name: no-http
    listeners:
      - name: https
        port: 9443
        protocol: HTTPS
        acme: { directory: https://ca/dir, challenge: http-01, names: [a.example.com] }
        default_action: { fixed_response: { status_code: 404 } }
";
    check(
        "cutover.yaml",
        text,
        expect![[r#"
        cutover.yaml:9:22: load_balancers[0].listeners[0].acme.directory: "http://acme.example.net/dir" is not an ACME directory URL; ACME servers are reached over HTTPS: write the CA's https:// directory URL, like https://acme-v02.api.letsencrypt.org/directory
        cutover.yaml:10:18: load_balancers[0].listeners[0].acme.email: "ops" is not an email address; write one like ops@example.com (the CA writes to it about expiring certificates), or remove `email`
        cutover.yaml:11:22: load_balancers[0].listeners[0].acme.challenge: "dns-01" is not a challenge cutover answers; use http-01 (served by an HTTP listener of this load balancer on port 80) or tls-alpn-01 (served by this listener on port 443)
        cutover.yaml:19:42: load_balancers[0].listeners[1].rules[0].conditions[0].host_header[0]: "*.example.com": a wildcard host cannot get a certificate by http-01 or tls-alpn-01 (only dns-01 can validate one, which cutover does not answer); list the host names in `acme.names`, or serve this host with a certificate of your own in `certificates`
        cutover.yaml:19:59: load_balancers[0].listeners[1].rules[0].conditions[0].host_header[1]: host-header value "10.0.0.1" must end in letters after its last `.` (ports are ignored: leave them out)
        cutover.yaml:19:59: load_balancers[0].listeners[1].rules[0].conditions[0].host_header[1]: "10.0.0.1": an IP address, not a host name; ACME certificates here are for DNS names
        cutover.yaml:19:69: load_balancers[0].listeners[1].rules[0].conditions[0].host_header[2]: "localhost": not a DNS name a CA can issue for; write a fully qualified name like www.example.com
        cutover.yaml:24:15: load_balancers[0].listeners[2].acme: `acme` is only used with `protocol: HTTPS`; add `protocol: HTTPS` or remove `acme`
        cutover.yaml:31:55: load_balancers[1].listeners[0].acme.challenge: http-01 is answered on an HTTP listener (port 80 for a public CA) and load balancer `no-http` has none; add `{ name: http, port: 80 }` to its listeners, or use `challenge: tls-alpn-01`
    "#]],
    );
}
