//! Server-sent events as the CLI reads them (`GET /v1/deployments/{id}/stream`): the lines of
//! `text/event-stream` turned into events, per the HTML standard's parsing rules, without IO.

/// One dispatched event: its type (`message` when unnamed), its data and its id, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub kind: String,
    pub data: String,
    pub id: Option<String>,
}

/// Collects the fields of the event being received until a blank line dispatches it.
#[derive(Default)]
pub struct SseParser {
    kind: Option<String>,
    data: Option<String>,
    id: Option<String>,
}

impl SseParser {
    /// Takes one line (without its line ending); returns the event a blank line completes.
    pub fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            let kind = self.kind.take();
            let id = self.id.take();
            // An event without data is not dispatched (the standard's rule).
            let data = self.data.take()?;
            return Some(SseEvent { kind: kind.unwrap_or_else(|| "message".into()), data, id });
        }
        if line.starts_with(':') {
            return None; // a comment: the server's keep-alive
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => self.kind = Some(value.to_string()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            },
            "id" => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields: nothing the CLI uses
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(text: &str) -> Vec<SseEvent> {
        let mut parser = SseParser::default();
        text.lines().filter_map(|line| parser.line(line)).collect()
    }

    #[test]
    fn named_events_with_ids_are_dispatched_at_each_blank_line() {
        let got = events(
            ": keep-alive\n\nevent: deployment\ndata: {\"id\":\"d-1\"}\n\nevent: event\nid: 7\ndata:a\ndata: b\n\n",
        );
        assert_eq!(
            got,
            [
                SseEvent { kind: "deployment".into(), data: "{\"id\":\"d-1\"}".into(), id: None },
                SseEvent { kind: "event".into(), data: "a\nb".into(), id: Some("7".into()) },
            ]
        );
    }

    #[test]
    fn an_event_cut_off_before_its_blank_line_is_not_dispatched() {
        assert_eq!(events("event: event\nid: 8\ndata: half"), []);
        assert_eq!(events("event: nothing\n\n"), [], "no data, no event");
    }
}
