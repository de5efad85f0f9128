//! `smtp-edge dkim keygen --domain D --selector S --out FILE [--algorithm rsa|ed25519]`: writes
//! a new private key (PKCS#8 PEM, mode 0600) and prints the DNS TXT record to publish.
//!
//! The record is made from the key as read back from FILE by the same code the server uses,
//! so what is printed is what the server will sign with. An existing FILE is never replaced: a
//! key whose record is published must not vanish under a typo.
//!
//! Exit status: 0 on success, 2 on a usage error, 1 when the key cannot be made or written.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::PathBuf;
use std::process::ExitCode;

use super::key::{generate, KeyAlgorithm, SigningKey};
use crate::cli::{self, CliError};
use crate::config::domain_name;

/// `smtp-edge dkim ...`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct DkimArgs {
    #[command(subcommand)]
    op: Op,
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
enum Op {
    /// Write a new signing key to FILE (mode 0600) and print the DNS TXT record to publish.
    Keygen(Keygen),
}

#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
struct Keygen {
    /// The signing domain (`d=`), e.g. example.test.
    #[arg(long, value_name = "DOMAIN")]
    domain: String,
    /// The selector (`s=`): the record goes at SELECTOR._domainkey.DOMAIN.
    #[arg(long, value_name = "SELECTOR")]
    selector: String,
    /// Where to write the private key; must not exist yet.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// The key type.
    #[arg(long, value_enum, default_value = "rsa")]
    algorithm: KeyAlgorithm,
    /// RSA key size: 2048, 3072 or 4096.
    #[arg(long, default_value_t = 2048)]
    bits: usize,
}

/// Runs `smtp-edge dkim ...`.
pub fn run(args: &DkimArgs) -> ExitCode {
    let Op::Keygen(keygen) = &args.op;
    cli::finish(execute(keygen), "dkim keygen")
}

fn execute(args: &Keygen) -> Result<String, CliError> {
    let domain =
        domain_name(&args.domain).map_err(|e| CliError::Usage(format!("--domain: {e}")))?;
    let selector = args.selector.to_ascii_lowercase();
    // A selector is a dot-separated sequence of labels (RFC 6376 §3.1), which a domain-name
    // check covers.
    domain_name(&selector).map_err(|e| CliError::Usage(format!("--selector: {e}")))?;
    if args.algorithm == KeyAlgorithm::Rsa && ![2048, 3072, 4096].contains(&args.bits) {
        return Err(CliError::Usage(format!(
            "--bits: 2048, 3072 or 4096, not {}",
            args.bits
        )));
    }
    let pem = generate(args.algorithm, args.bits).map_err(CliError::Failed)?;
    let failed =
        |e: std::io::Error| CliError::Failed(format!("cannot write {}: {e}", args.out.display()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .map_err(failed)?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    let key = SigningKey::load(&args.out).map_err(|e| CliError::Failed(e.to_string()))?;
    // TOML strings, quoted and escaped as TOML wants, so the lines paste into the file as is.
    let toml_string = |s: &str| toml::Value::String(s.to_owned()).to_string();
    Ok(format!(
        "wrote a {} key ({} bits) to {}\n\
         publish this TXT record, then add to the configuration:\n\
         [[dkim.sign]]\ndomain = {}\nselector = {}\nkey = {}\n\
         {selector}._domainkey.{domain}. IN TXT {}\n",
        match key.algorithm() {
            KeyAlgorithm::Rsa => "RSA",
            KeyAlgorithm::Ed25519 => "Ed25519",
        },
        key.bits(),
        args.out.display(),
        toml_string(&domain),
        toml_string(&selector),
        toml_string(&args.out.display().to_string()),
        zone_strings(&key.txt_record()),
    ))
}

/// `record` as zone-file character-strings: at most 255 octets each ([RFC 1035 §3.3.14]),
/// which an RSA key's record exceeds; resolvers join them back (RFC 6376 §3.6.2.2).
///
/// [RFC 1035 §3.3.14]: https://www.rfc-editor.org/rfc/rfc1035#section-3.3.14
fn zone_strings(record: &str) -> String {
    const MAX: usize = 255;
    let parts: Vec<String> = record
        .as_bytes()
        .chunks(MAX)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    match parts.as_slice() {
        [one] => one.clone(),
        _ => format!("( {} )", parts.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration lines printed paste into the configuration file as they are.
    #[test]
    fn the_printed_configuration_is_toml_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a \"quoted\" key.pem");
        let printed = execute(&Keygen {
            domain: "Example.TEST".to_owned(),
            selector: "s1".to_owned(),
            out: out.clone(),
            algorithm: KeyAlgorithm::Ed25519,
            bits: 2048,
        })
        .unwrap();
        let snippet: String = printed
            .lines()
            .skip_while(|l| !l.starts_with("[[dkim.sign]]"))
            .take_while(|l| !l.contains("IN TXT"))
            .map(|l| format!("{l}\n"))
            .collect();
        let parsed: toml::Value =
            toml::from_str(&snippet).unwrap_or_else(|e| panic!("{e}: {snippet}"));
        let entry = &parsed["dkim"]["sign"][0];
        assert_eq!(entry["domain"].as_str(), Some("example.test"));
        assert_eq!(entry["selector"].as_str(), Some("s1"));
        assert_eq!(entry["key"].as_str(), Some(out.to_str().unwrap()));
    }

    #[test]
    fn long_records_are_split_into_strings_of_at_most_255_octets() {
        assert_eq!(
            zone_strings("v=DKIM1; k=ed25519; p=abc"),
            "\"v=DKIM1; k=ed25519; p=abc\""
        );
        let long = "x".repeat(600);
        let split = zone_strings(&long);
        assert!(
            split.starts_with("( \"") && split.ends_with("\" )"),
            "{split}"
        );
        let strings: Vec<&str> = split
            .trim_start_matches("( ")
            .trim_end_matches(" )")
            .split(' ')
            .map(|s| s.trim_matches('"'))
            .collect();
        assert_eq!(
            strings.iter().map(|s| s.len()).collect::<Vec<_>>(),
            [255, 255, 90]
        );
        assert_eq!(strings.concat(), long);
    }
}
