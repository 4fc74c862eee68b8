//! The HTTP/2 stack's `tracing` warnings (h2, hyper, tonic: why a connection
//! was closed) as `log` records, and nothing else of `tracing` at all.
//!
//! With no subscriber in the process, `tracing`'s `log` feature turned every
//! span of h2 and hyper (several per request) into log bookkeeping on enter,
//! exit, record and drop, each call checking `log`'s level before doing
//! nothing: 2% of the server's samples, 4% of the network thread's, under
//! the mlp's mixed load. A subscriber that declares no interest in spans and
//! in events below WARN has each of those callsites disabled once, when it
//! is first reached; from then on the macro is one relaxed load.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Forwards `tracing` events at WARN and ERROR to `log`; ignores spans.
#[derive(Debug, Clone, Copy, Default)]
pub struct WarningsToLog;

impl WarningsToLog {
    fn wanted(metadata: &Metadata<'_>) -> bool {
        metadata.is_event() && *metadata.level() <= Level::WARN
    }
}

impl Subscriber for WarningsToLog {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if Self::wanted(metadata) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        Self::wanted(metadata)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    // Spans are never enabled, so these are never called with real ones.
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let metadata = event.metadata();
        let level = if *metadata.level() == Level::ERROR {
            log::Level::Error
        } else {
            log::Level::Warn
        };
        let mut text = Text::default();
        event.record(&mut text);
        log::logger().log(
            &log::Record::builder()
                .level(level)
                .target(metadata.target())
                .module_path(metadata.module_path())
                .file(metadata.file())
                .line(metadata.line())
                .args(format_args!("{}", text.line()))
                .build(),
        );
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's message, then its other fields as `name=value`.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn line(&self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message.clone(),
            (true, false) => self.fields.clone(),
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let sep = if self.fields.is_empty() { "" } else { " " };
            let _ = write!(self.fields, "{sep}{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Makes [`WarningsToLog`] the process's `tracing` subscriber. A second call,
/// or a subscriber some other part of the process set first, keeps the first.
pub fn install() {
    let _ = tracing::subscriber::set_global_default(WarningsToLog);
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// Every record it is given, as (level, target, text).
    struct Capture(Mutex<Vec<(log::Level, String, String)>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }

        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().push((
                record.level(),
                record.target().to_owned(),
                record.args().to_string(),
            ));
        }

        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

    #[test]
    fn warnings_reach_log_and_nothing_else_does() {
        log::set_logger(&CAPTURE).expect("no other test sets a logger");
        log::set_max_level(log::LevelFilter::Trace);
        tracing::subscriber::with_default(WarningsToLog, || {
            let span = tracing::debug_span!("stream", id = 3);
            assert!(span.is_disabled(), "spans are never enabled");
            let _entered = span.enter();
            tracing::debug!(target: "h2::codec", "frame received");
            tracing::info!("connection accepted");
            tracing::warn!(target: "h2::proto", reason = "too_many_data_frames", "GOAWAY sent");
            tracing::error!("accept failed: {}", "EMFILE");
        });
        let records = CAPTURE.0.lock().clone();
        assert_eq!(
            records,
            [
                (
                    log::Level::Warn,
                    "h2::proto".to_owned(),
                    "GOAWAY sent reason=\"too_many_data_frames\"".to_owned()
                ),
                (
                    log::Level::Error,
                    module_path!().to_owned(),
                    "accept failed: EMFILE".to_owned()
                ),
            ]
        );
    }
}
