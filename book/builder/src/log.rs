//! mdBook reports problems (a missing include, a bad link) only through
//! `tracing`; without a subscriber they vanish and the build "succeeds".
//! This is the smallest subscriber that keeps the warnings and errors.

use std::fmt::{Debug, Write};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

struct Collector {
    messages: Arc<Mutex<Vec<String>>>,
}

impl Subscriber for Collector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Levels compare by verbosity: WARN and ERROR are the "small" ones.
        *metadata.level() <= Level::WARN
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        let line = format!(
            "{} {}: {}",
            event.metadata().level(),
            event.metadata().target(),
            text.0
        );
        if let Ok(mut messages) = self.messages.lock() {
            messages.push(line);
        }
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        let _ = if field.name() == "message" {
            write!(self.0, "{value:?}")
        } else {
            write!(self.0, "{}={value:?}", field.name())
        };
    }
}

/// Run `f`, returning its result and every warning or error it logged.
pub fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let messages = Arc::new(Mutex::new(Vec::new()));
    let collector = Collector {
        messages: Arc::clone(&messages),
    };
    let result = tracing::subscriber::with_default(collector, f);
    let logged = messages.lock().map(|m| m.clone()).unwrap_or_default();
    (result, logged)
}
