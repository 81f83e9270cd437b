//! Property tests: no parser of outside data panics, whatever it is given.

use aqueduct_smart::*;
use proptest::prelude::*;

fn jwks_sample() -> Jwks {
    Jwks::parse(br#"{"keys":[{"kty":"RSA","kid":"k","alg":"RS256","use":"sig","n":"oCy5pH_KeyKqU17zEY9HZ0TY5jennfzwrOWjokt5H3_vg8utCfv4AGnfbGUUkF57JcTdHcavbqfKhSbq4rpYkxYWVq85KcBillLVg-ZRUKAlacIgvHkLDtCUFHuyeBWXlukxBWEKJv9so2WC6nlxrxCF9hZmkmmjJq36WcB3pcLZ9lWeC4qD2UDYcwGhLrfhZo9RWQWplpNSqUC8yIlVSNc578R4QleH6YtmGRUgJTQL8CnPkOy_GOlqtnujTwnSAEFxRpjHngA24rikVWej2DbB8qAqLRG-6-Oe0ycrcPIDdkRx6l_7oR67UIXFZ_2_-HMKs_XL-bQJr09YDxLXEw","e":"AQAB"}]}"#).unwrap()
}

fn json_like() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "\\{\"[a-z_]{1,12}\":(\"[ -~]{0,20}\"|[0-9-]{1,5}|true|null|\\[\\]|\\{\\})\\}",
        Just(r#"{"access_token":"a","expires_in":1e400}"#.to_string()),
        Just(r#"{"access_token":"a","expires_in":-5}"#.to_string()),
        Just(r#"{"access_token":"a","expires_in":"99999999999999999999"}"#.to_string()),
        Just(
            r#"{"token_endpoint":7,"capabilities":"a b","scopes_supported":[1,null]}"#.to_string()
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn token_response_never_panics(s in json_like()) {
        let _ = parse_token_response(s.as_bytes());
        let _ = parse_oauth_error(s.as_bytes());
    }

    #[test]
    fn token_response_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_token_response(&b);
        let _ = SmartConfiguration::parse(&b);
        let _ = SmartConfiguration::parse_capability_statement(&b);
        let _ = Jwks::parse(&b);
    }

    #[test]
    fn smart_configuration_never_panics(s in json_like()) {
        let _ = SmartConfiguration::parse(s.as_bytes());
        let _ = SmartConfiguration::parse_capability_statement(s.as_bytes());
    }

    #[test]
    fn redirect_never_panics(q in "[a-z=&%?#:/._0-9A-F-]{0,80}", s in any::<String>()) {
        let p = RedirectParams::from_query(&q);
        let _ = p.code_and_state();
        let _ = RedirectParams::from_query(&s).code_and_state();
        let _ = RedirectParams::from_url(&format!("http://127.0.0.1:1/cb?{q}"));
        let _ = RedirectParams::from_url(&s);
    }

    #[test]
    fn id_token_never_panics(a in "[A-Za-z0-9_-]{0,60}", b in "[A-Za-z0-9_-]{0,60}", c in "[A-Za-z0-9_-]{0,60}", s in any::<String>()) {
        let jwks = jwks_sample();
        let iss = vec!["https://x".to_string()];
        let _ = verify_id_token(&format!("{a}.{b}.{c}"), &jwks, &iss, "client", Some("n"), 60);
        let _ = verify_id_token(&s, &jwks, &iss, "client", None, 60);
        // a well-formed header with junk claims
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let h = e.encode(br#"{"alg":"RS256","kid":"k"}"#);
        let body = e.encode(s.as_bytes());
        let _ = verify_id_token(&format!("{h}.{body}.{c}"), &jwks, &iss, "client", None, 60);
    }

    #[test]
    fn scopes_never_panic(s in any::<String>(), t in any::<String>()) {
        let g = GrantedScopes::parse(&s);
        let _ = g.covers(&t);
        let _ = g.uncovered(std::slice::from_ref(&t));
    }

    #[test]
    fn vault_open_never_panics(b in proptest::collection::vec(any::<u8>(), 0..100)) {
        let k = VaultKey::from_bytes(&[7u8; 32]).unwrap();
        let c = aqueduct_store::ConnectionRef::new("o", "c");
        prop_assert!(vault::open(&k, &c, "tokens", &b).is_err());
        let _ = VaultKey::from_base64(&String::from_utf8_lossy(&b));
    }
}
