//! One handler per node kind. [`Run::advance`] walks instant nodes until the instance waits
//! or ends; each handler records its steps and effects and says where the walk goes next.

use serde_json::{Map, Value, json};
use waymark_core::journey::{Branch, Category, NodeKind, SplitPath, WaitEvent};

use crate::effect::{
    DEFAULT_WEBHOOK_RETRIES, DEFAULT_WEBHOOK_TIMEOUT_MS, JumpTo, Message, ProfileUpdate,
    WebhookCall,
};
use crate::{
    Effect, INBOX_TTL_MS, Instance, MAX_STEPS_PER_INPUT, Run, Status, StepKind, Waiting,
    devices_of, next_local_time, recipient,
};

/// How long an instance at an undecided winner node past its time waits to look again.
const WINNER_RETRY_MS: waymark_core::time::Millis = 60_000;

/// Where the walk goes after a node.
enum Next {
    /// On to this node, within the same input.
    Node(String),
    /// The instance waits (a timer, an event, a webhook's answer) or has ended.
    Stop,
}

/// The node being run and the input's event, if it has one.
#[derive(Clone, Copy)]
struct Here<'n> {
    idx: usize,
    id: &'n str,
    event: Option<&'n Value>,
}

impl Run<'_> {
    /// Moves through instant nodes until the instance waits or ends.
    pub(crate) fn advance(
        &mut self,
        instance: &mut Instance,
        mut id: String,
        event: Option<&Value>,
    ) {
        let j = self.j;
        for _ in 0..MAX_STEPS_PER_INPUT {
            if let Some(exit) = &j.exit_when
                && self.eval(exit, event, &instance.context).unwrap_or(false)
            {
                let detail = json!({"rule": "exit.when"});
                self.end(instance, Status::Exited, StepKind::Exited, Some(detail));
                return;
            }
            let idx = j.index[&id];
            instance.node = Some(id.clone());
            self.step(instance, &id, StepKind::Entered, None);
            let here = Here {
                idx,
                id: &id,
                event,
            };
            let next = match &j.doc.nodes[idx].kind {
                NodeKind::Condition {
                    branches,
                    otherwise,
                } => self.condition(instance, here, branches, otherwise),
                NodeKind::Wait { event, until, .. } => {
                    self.wait(instance, here, event.as_ref(), until.as_deref())
                }
                NodeKind::Message {
                    channel,
                    template,
                    category,
                    subscription,
                    surface,
                    next,
                    ..
                } => self.message(
                    instance,
                    here,
                    MessageNode {
                        channel,
                        template,
                        category: *category,
                        subscription: subscription.as_deref(),
                        surface: surface.as_deref(),
                        next,
                    },
                ),
                NodeKind::Webhook {
                    method,
                    url,
                    retries,
                    on_error,
                    follow_redirects,
                    ..
                } => self.webhook(
                    instance,
                    here,
                    WebhookNode {
                        method,
                        url,
                        retries: *retries,
                        on_error: on_error.as_deref(),
                        follow_redirects: *follow_redirects,
                    },
                ),
                NodeKind::UpdateProfile { set, unset, next } => {
                    self.update_profile(instance, here, set, unset, next)
                }
                NodeKind::RandomSplit { paths } => self.random_split(instance, here, paths),
                NodeKind::Winner { .. } => match self.winner_path(instance, &id) {
                    Some(path) => Next::Node(path),
                    None => {
                        self.await_winner(instance, &id);
                        Next::Stop
                    }
                },
                NodeKind::Jump { journey } => self.jump(instance, here, journey),
                NodeKind::End {} => {
                    self.end(instance, Status::Completed, StepKind::Completed, None);
                    Next::Stop
                }
            };
            match next {
                Next::Node(next) => id = next,
                Next::Stop => return,
            }
        }
        let detail = json!({"reason": "too many steps without a wait"});
        self.end(instance, Status::Failed, StepKind::Failed, Some(detail));
    }

    /// The first branch whose condition holds, else `otherwise`. A branch whose condition
    /// errs is not taken; the errors are recorded.
    fn condition(
        &mut self,
        instance: &mut Instance,
        here: Here<'_>,
        branches: &[Branch],
        otherwise: &str,
    ) -> Next {
        let mut chosen = None;
        let mut errors = Vec::new();
        for (b, branch) in branches.iter().enumerate() {
            let when = &self.j.branches[&(here.idx, b)];
            match self.eval(when, here.event, &instance.context) {
                Ok(true) => {
                    chosen = Some((b, branch.next.clone()));
                    break;
                }
                Ok(false) => {}
                Err(e) => errors.push(json!({"branch": b, "error": e})),
            }
        }
        let detail = match &chosen {
            Some((b, _)) => json!({"branch": b, "errors": errors}),
            None => json!({"branch": "else", "errors": errors}),
        };
        if !errors.is_empty() {
            let errors = json!({"errors": errors});
            self.step(instance, here.id, StepKind::Error, Some(errors));
        }
        self.step(instance, here.id, StepKind::Branch, Some(detail));
        Next::Node(chosen.map_or_else(|| otherwise.to_owned(), |(_, next)| next))
    }

    /// Waits for a time (a duration, or a local time of day) or for an event (until its
    /// timeout).
    fn wait(
        &mut self,
        instance: &mut Instance,
        here: Here<'_>,
        event: Option<&WaitEvent>,
        until: Option<&str>,
    ) -> Next {
        let (j, now) = (self.j, self.ctx.now);
        let node = here.id.to_owned();
        let (waiting, due) = match event {
            Some(e) => {
                let due = now + j.durations[&here.idx];
                let timer = self.schedule(instance, due);
                let name = e.name.clone();
                let waiting = Waiting::Event {
                    node,
                    name,
                    due,
                    timer,
                };
                (waiting, due)
            }
            None => {
                let due = match until {
                    Some(hhmm) => next_local_time(hhmm, now, &j.zone(self.ctx.profile)),
                    None => now + j.durations[&here.idx],
                };
                let timer = self.schedule(instance, due);
                (Waiting::Timer { node, due, timer }, due)
            }
        };
        let detail = json!({"until": waymark_core::time::format_iso8601(due)});
        self.step(instance, here.id, StepKind::Waiting, Some(detail));
        instance.waiting = Some(waiting);
        Next::Stop
    }

    /// Queues a message, unless the person said no to it (consent), cannot be reached on
    /// the channel, or its template fails to render; the instance goes on either way.
    fn message(&mut self, instance: &mut Instance, here: Here<'_>, node: MessageNode<'_>) -> Next {
        let MessageNode {
            channel,
            template,
            category,
            subscription,
            surface,
            next,
        } = node;
        let j = self.j;
        let go_on = Next::Node(next.to_owned());
        // Consent first: a person who unsubscribed from this channel (a signed link, an SMS
        // STOP, or an identify setting the trait) gets nothing on it.
        let said_no = |trait_name: &str| {
            self.overlay
                .get(trait_name)
                .or_else(|| self.ctx.profile.traits.get(trait_name))
                == Some(&Value::Bool(true))
        };
        let refused = if said_no(&format!("unsubscribed_{channel}")) {
            Some("unsubscribed".to_owned())
        } else {
            subscription
                .filter(|list| said_no(&format!("unsubscribed_list_{list}")))
                .map(|list| format!("unsubscribed from {list}"))
        };
        if let Some(reason) = refused {
            let detail = json!({"reason": reason, "channel": channel});
            self.step(instance, here.id, StepKind::Suppressed, Some(detail));
            return go_on;
        }
        let devices = devices_of(channel, self.ctx.profile);
        if channel == "push" && devices.is_empty() {
            let detail = json!({"reason": "the person has no push token (apns_token or fcm_token identity)", "channel": channel});
            self.step(instance, here.id, StepKind::Error, Some(detail));
            return go_on;
        }
        let to = match recipient(channel, self.ctx.profile, &self.overlay) {
            Ok(to) => to,
            Err(reason) => {
                let detail = json!({"reason": reason, "channel": channel});
                self.step(instance, here.id, StepKind::Error, Some(detail));
                return go_on;
            }
        };
        let content = match j.contents.get(template) {
            None => None,
            Some(c) => {
                let data = json!({
                    "profile": self.profile_json(), "event": here.event, "journey": instance.context,
                });
                match c.render(&data) {
                    Ok(rendered) => Some(rendered),
                    Err(reason) => {
                        // The message fails, with why; the instance carries on.
                        let detail = json!({"reason": reason, "template": template});
                        self.step(instance, here.id, StepKind::Error, Some(detail));
                        return go_on;
                    }
                }
            }
        };
        let expires = j.durations.get(&here.idx).copied();
        let expires_at = match channel {
            "in_app" => Some(self.ctx.now + expires.unwrap_or(INBOX_TTL_MS)),
            // Without `expires`, content stays on its surface while the instance lasts.
            "code_based" => expires.map(|d| self.ctx.now + d),
            _ => None,
        };
        self.effects.push(Effect::Message(Message {
            key: self.key(instance, here.id),
            instance: instance.number,
            node: here.id.to_owned(),
            channel: channel.to_owned(),
            template: template.to_owned(),
            content,
            to,
            transactional: category == Category::Transactional,
            expires_at,
            devices,
            subscription: subscription.map(str::to_owned),
            surface: surface.map(str::to_owned),
            priority: if surface.is_some() {
                j.doc.properties.priority
            } else {
                0
            },
        }));
        let detail = json!({"channel": channel, "template": template});
        self.step(instance, here.id, StepKind::Sent, Some(detail));
        go_on
    }

    /// Calls a webhook and waits for its outcome. A request that fails to render is the
    /// call failing: the error path, or the instance fails.
    fn webhook(&mut self, instance: &mut Instance, here: Here<'_>, node: WebhookNode<'_>) -> Next {
        let j = self.j;
        let (headers, body) = match self.render_webhook(here.idx, here.event, &instance.context) {
            Ok(request) => request,
            Err(reason) => {
                let detail = json!({"reason": reason, "took": node.on_error});
                self.step(instance, here.id, StepKind::Error, Some(detail));
                if let Some(path) = node.on_error {
                    return Next::Node(path.to_owned());
                }
                let detail = json!({"node": here.id, "reason": reason});
                self.end(instance, Status::Failed, StepKind::Failed, Some(detail));
                return Next::Stop;
            }
        };
        self.effects.push(Effect::Webhook(WebhookCall {
            key: self.key(instance, here.id),
            instance: instance.number,
            node: here.id.to_owned(),
            method: node.method.to_owned(),
            url: node.url.to_owned(),
            headers,
            body,
            timeout_ms: j
                .durations
                .get(&here.idx)
                .copied()
                .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_MS),
            retries: node.retries.unwrap_or(DEFAULT_WEBHOOK_RETRIES),
            follow_redirects: node.follow_redirects,
        }));
        let detail = json!({"for": "webhook", "url": node.url});
        self.step(instance, here.id, StepKind::Waiting, Some(detail));
        instance.waiting = Some(Waiting::Webhook {
            node: here.id.to_owned(),
        });
        Next::Stop
    }

    /// Sets and unsets traits; later conditions of this input see them at once.
    fn update_profile(
        &mut self,
        instance: &mut Instance,
        here: Here<'_>,
        set: &std::collections::BTreeMap<String, Value>,
        unset: &[String],
        next: &str,
    ) -> Next {
        let set: Map<String, Value> = set.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in &set {
            self.overlay.insert(k.clone(), v.clone());
        }
        for k in unset {
            self.overlay.insert(k.clone(), Value::Null);
        }
        self.cel_profile.clear();
        let detail = json!({"set": set, "unset": unset});
        self.effects.push(Effect::UpdateProfile(ProfileUpdate {
            key: self.key(instance, here.id),
            set,
            unset: unset.to_vec(),
        }));
        self.step(instance, here.id, StepKind::Updated, Some(detail));
        Next::Node(next.to_owned())
    }

    /// A path by percentage. The bucket is a hash of the journey, person, instance and
    /// node, so the same instance always takes the same path.
    fn random_split(
        &mut self,
        instance: &mut Instance,
        here: Here<'_>,
        paths: &[SplitPath],
    ) -> Next {
        let seed = format!(
            "{}:{}:{}:{}",
            self.j.doc.key, self.ctx.profile.id, instance.number, here.id
        );
        let bucket = (xxhash_rust::xxh3::xxh3_64(seed.as_bytes()) % 100) as u32;
        let mut upto = 0;
        for (p, path) in paths.iter().enumerate() {
            upto += path.percent;
            if bucket < upto {
                let detail = json!({"path": p, "bucket": bucket});
                self.step(instance, here.id, StepKind::Split, Some(detail));
                return Next::Node(path.next.clone());
            }
        }
        Next::Node(paths.last().map(|p| p.next.clone()).unwrap_or_default())
    }

    /// The path a winner node decided, recorded as the instance's step there.
    pub(crate) fn winner_path(&mut self, instance: &mut Instance, id: &str) -> Option<String> {
        let path = self
            .ctx
            .winners
            .get(&(self.j.doc.key.clone(), id.to_owned()))?
            .clone();
        let detail = json!({"winner": path});
        self.step(instance, id, StepKind::Split, Some(detail));
        Some(path)
    }

    /// Waits at a winner node for its decision: a timer at the node's time (after it, a
    /// retry a minute on, which a store that decides at the time never needs).
    pub(crate) fn await_winner(&mut self, instance: &mut Instance, id: &str) {
        let at = self
            .j
            .winners
            .iter()
            .find(|(node, _)| node == id)
            .map_or(0, |(_, at)| *at);
        let now = self.ctx.now;
        let due = if at > now { at } else { now + WINNER_RETRY_MS };
        let timer = self.schedule(instance, due);
        let detail = json!({"for": "winner", "until": waymark_core::time::format_iso8601(due)});
        self.step(instance, id, StepKind::Waiting, Some(detail));
        instance.waiting = Some(Waiting::Timer {
            node: id.to_owned(),
            due,
            timer,
        });
    }

    /// Ends here and enters the person into another journey (through the outbox).
    fn jump(&mut self, instance: &mut Instance, here: Here<'_>, journey: &str) -> Next {
        let entry = instance
            .context
            .get("entry")
            .cloned()
            .unwrap_or(Value::Null);
        self.effects.push(Effect::Jump(JumpTo {
            key: self.key(instance, here.id),
            journey: journey.to_owned(),
            from: self.j.doc.key.clone(),
            entry,
        }));
        let detail = json!({"journey": journey});
        self.end(instance, Status::Completed, StepKind::Jumped, Some(detail));
        Next::Stop
    }
}

/// A message node's settings.
struct MessageNode<'n> {
    channel: &'n str,
    template: &'n str,
    category: Category,
    subscription: Option<&'n str>,
    surface: Option<&'n str>,
    next: &'n str,
}

/// A webhook node's settings (headers and body are compiled templates in the journey).
struct WebhookNode<'n> {
    method: &'n str,
    url: &'n str,
    retries: Option<u32>,
    on_error: Option<&'n str>,
    follow_redirects: bool,
}
