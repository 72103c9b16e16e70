//! Run-time control of a [`Wan`] over a line protocol on a loopback TCP port, so scripts can
//! cut and heal links (`printf 'isolate eu-west-1\n' | nc 127.0.0.1 PORT`). One command per
//! line; each answer is one line, `ok …` or `error: …`.
//!
//! ```text
//! cut FROM TO            hold bytes FROM → TO (one way)
//! partition A B          cut both directions between A and B
//! isolate REGION         cut every link to and from REGION
//! heal FROM TO           heal one direction
//! heal                   heal everything
//! delay FROM TO MS       set the one-way delay FROM → TO
//! bytes                  `ok FROM>TO=N …` for every directed pair
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::Wan;
use crate::error::LabError;

/// One control command (see the module docs for the text form).
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Cut `from → to`.
    Cut(String, String),
    /// Cut both directions between two regions.
    Partition(String, String),
    /// Cut every link of a region.
    Isolate(String),
    /// Heal `from → to`.
    Heal(String, String),
    /// Heal every link.
    HealAll,
    /// Set the one-way delay of `from → to`.
    Delay(String, String, Duration),
    /// Report the byte counters.
    Bytes,
}

impl Command {
    /// Parses one line.
    pub fn parse(line: &str) -> Result<Command, LabError> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let s = |i: usize| words[i].to_string();
        Ok(match words.as_slice() {
            ["cut", _, _] => Command::Cut(s(1), s(2)),
            ["partition", _, _] => Command::Partition(s(1), s(2)),
            ["isolate", _] => Command::Isolate(s(1)),
            ["heal", _, _] => Command::Heal(s(1), s(2)),
            ["heal"] => Command::HealAll,
            ["bytes"] => Command::Bytes,
            ["delay", _, _, ms] => {
                let ms: f64 = ms
                    .parse()
                    .ok()
                    .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| LabError::Parse {
                        input: line.to_string(),
                        reason: format!("`{ms}` is not a delay in ms"),
                    })?;
                Command::Delay(s(1), s(2), Duration::from_secs_f64(ms / 1000.0))
            }
            _ => {
                return Err(LabError::Parse {
                    input: line.to_string(),
                    reason: "expected cut|partition FROM TO, isolate REGION, heal [FROM TO], delay FROM TO MS or bytes".into(),
                });
            }
        })
    }
}

/// Applies a command; the answer line's text after `ok`.
pub fn apply(wan: &Wan, command: &Command) -> Result<String, LabError> {
    match command {
        Command::Cut(a, b) => wan.cut(a, b)?,
        Command::Partition(a, b) => wan.partition(a, b)?,
        Command::Isolate(r) => wan.isolate(r),
        Command::Heal(a, b) => wan.heal(a, b)?,
        Command::HealAll => wan.heal_all(),
        Command::Delay(a, b, d) => wan.set_delay(a, b, *d)?,
        Command::Bytes => {
            let parts: Vec<String> = wan
                .counters()
                .into_iter()
                .map(|((from, to), n)| format!("{from}>{to}={n}"))
                .collect();
            return Ok(parts.join(" "));
        }
    }
    Ok(String::new())
}

/// Serves the control protocol on `listen` until the returned task is aborted.
pub async fn serve(wan: Wan, listen: SocketAddr) -> Result<(SocketAddr, JoinHandle<()>), LabError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| LabError::Io {
            what: format!("binding the WAN control port {listen}"),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| LabError::Io {
        what: "reading the control port's address".into(),
        source,
    })?;
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let wan = wan.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let answer = match Command::parse(&line).and_then(|c| apply(&wan, &c)) {
                        Ok(text) if text.is_empty() => "ok\n".to_string(),
                        Ok(text) => format!("ok {text}\n"),
                        Err(e) => format!("error: {e}\n"),
                    };
                    tracing::info!(command = %line.trim(), answer = %answer.trim(), "wan control");
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(
            Command::parse(" cut a b ").expect("cut"),
            Command::Cut("a".into(), "b".into())
        );
        assert_eq!(Command::parse("heal").expect("heal"), Command::HealAll);
        assert_eq!(
            Command::parse("delay a b 12.5").expect("delay"),
            Command::Delay("a".into(), "b".into(), Duration::from_micros(12_500))
        );
        assert!(Command::parse("delay a b -1").is_err());
        assert!(Command::parse("explode").is_err());
    }

    #[test]
    fn apply_switches_links() {
        let wan = Wan::new(super::super::Profile::default(), 1);
        apply(
            &wan,
            &Command::Delay(
                "us-east-1".into(),
                "eu-west-1".into(),
                Duration::from_millis(3),
            ),
        )
        .expect("delay");
        apply(
            &wan,
            &Command::Partition("us-east-1".into(), "eu-west-1".into()),
        )
        .expect("cut");
        assert!(!wan.is_up("eu-west-1", "us-east-1").expect("pair"));
        apply(&wan, &Command::HealAll).expect("heal");
        assert!(wan.is_up("eu-west-1", "us-east-1").expect("pair"));
        let bytes = apply(&wan, &Command::Bytes).expect("bytes");
        assert!(bytes.contains("us-east-1>eu-west-1=0"), "{bytes}");
    }
}
