//! The channels a message can go out on: one list that journeys, templates, governance
//! and the dispatcher all read.

/// A channel of a journey's message node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// Records what would be sent; sends nothing.
    Log,
    Email,
    Sms,
    Push,
    InApp,
    DirectMail,
    /// Content placed on a surface of a page or app (a decisioning placement) while the
    /// journey step lasts; the decide API returns it, ahead of catalogue offers.
    CodeBased,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Log,
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::InApp,
        Channel::DirectMail,
        Channel::CodeBased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Log => "log",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::InApp => "in_app",
            Channel::DirectMail => "direct_mail",
            Channel::CodeBased => "code_based",
        }
    }

    pub fn parse(name: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// Whether messages on it reach a provider or a person (all but `log`): what templates
    /// are written for, and what throttles and caps apply to.
    pub fn sends(self) -> bool {
        self != Channel::Log
    }

    /// Whether frequency caps, throttles and quiet hours apply to it: every channel that
    /// sends, but content placed on a page or app (`code_based`), which the person sees
    /// only when they are there and which interrupts nobody.
    pub fn governed(self) -> bool {
        self.sends() && self != Channel::CodeBased
    }

    /// The channels that send, by name.
    pub fn sending() -> impl Iterator<Item = &'static str> {
        Self::ALL
            .into_iter()
            .filter(|c| c.sends())
            .map(Channel::as_str)
    }

    /// Every channel's name, for messages that list them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.into_iter().map(Channel::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back() {
        for c in Channel::ALL {
            assert_eq!(Channel::parse(c.as_str()), Some(c));
        }
        assert_eq!(Channel::parse("fax"), None);
        assert!(!Channel::sending().any(|c| c == "log"));
        assert_eq!(Channel::sending().count(), 6);
        assert!(Channel::Email.governed() && !Channel::CodeBased.governed());
    }
}
