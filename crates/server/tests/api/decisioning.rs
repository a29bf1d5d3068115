//! Offer decisioning through the API: the catalogue as versioned documents checked
//! against each other, decisions for signed-in people (with their user hash), visitors
//! and people who did not prove who they are, feedback counted once, caps, explain, and
//! the learned ranker reading everyone's counts.

use super::*;

async fn admin(api: &Api, method: &str, path: &str, doc: Option<Value>) -> Reply {
    let body = doc.map_or_else(Vec::new, |d| serde_json::to_vec(&d).expect("json"));
    api.call(method, path, Auth::Admin(ADMIN), body, None).await
}

async fn put(api: &Api, path: &str, doc: Value) -> Reply {
    let r = admin(api, "PUT", path, Some(doc)).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
    r
}

async fn decide(api: &Api, auth: Auth<'_>, request: Value) -> Reply {
    api.call(
        "POST",
        "/v1/decide",
        auth,
        serde_json::to_vec(&request).expect("json"),
        None,
    )
    .await
}

fn offers(r: &Reply, placement: usize) -> Vec<String> {
    r.body["placements"][placement]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["offer"].as_str().map(str::to_owned))
        .collect()
}

async fn feedback(
    api: &Api,
    event: &str,
    user: &str,
    proposition: &str,
    offer: &str,
    placement: &str,
) -> Reply {
    api.post(
        "/v1/track",
        json!({"userId": user, "event": event,
            "properties": {"proposition": proposition, "offer": offer, "placement": placement}}),
    )
    .await
}

pub async fn decisioning_through_the_api(api: &Api) {
    put(
        api,
        "/v1/placements/hero",
        json!({"key": "hero", "channel": "web", "surface": "web://shop.example/home#hero", "content": "html"}),
    )
    .await;
    put(
        api,
        "/v1/placements/card",
        json!({"key": "card", "channel": "app", "surface": "app://com.example/home", "content": "json"}),
    )
    .await;
    put(
        api,
        "/v1/audiences/vip",
        json!({"key": "vip", "refresh": "upload"}),
    )
    .await;

    // Mistakes are refused with their fields, nothing stored.
    let r = admin(
        api,
        "PUT",
        "/v1/offers/bad",
        Some(json!({"key": "bad", "eligibility": "in_audience(\"gold\") && ", "content": {"nowhere": "x"},
            "caps": [{"per": "person", "max": 0}]})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields = r.error_fields();
    for field in ["eligibility", "caps[0].max", "content.nowhere"] {
        assert!(fields.contains(&field), "{field} in {fields:?}");
    }
    let r = admin(
        api,
        "PUT",
        "/v1/offers/bad",
        Some(
            json!({"key": "bad", "eligibility": "in_audience(\"gold\")", "content": {"hero": "x"}}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["code"], "unknown_audience");
    let r = admin(
        api,
        "PUT",
        "/v1/offers/bad",
        Some(json!({"key": "bad", "content": {"hero": "x"}, "priority": "high"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["field"], "priority");
    assert_eq!(
        admin(api, "GET", "/v1/offers/bad", None).await.status,
        StatusCode::NOT_FOUND
    );

    put(
        api,
        "/v1/offers/vip-sale",
        json!({"key": "vip-sale", "priority": 10,
            "eligibility": "in_audience(\"vip\") && context.page == \"/shop\"",
            "caps": [{"per": "person", "max": 2, "window": "7d"}],
            "content": {"hero": "<b>For you, {{profile.traits.name}}</b>", "card": {"title": "VIP {{profile.traits.name}}"}}}),
    )
    .await;
    put(
        api,
        "/v1/offers/generic",
        json!({"key": "generic", "priority": 1, "content": {"hero": "<b>Hello</b>"}}),
    )
    .await;
    put(
        api,
        "/v1/offers/house",
        json!({"key": "house", "eligibility": "false", "content": {"hero": "house ad", "card": {"title": "house"}}}),
    )
    .await;
    put(
        api,
        "/v1/decision-policies/home",
        json!({"key": "home", "placement": "hero", "fallback": "house"}),
    )
    .await;
    let r = admin(
        api,
        "PUT",
        "/v1/decision-policies/other",
        Some(json!({"key": "other", "placement": "hero"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.body["errors"][0]["code"], "placement_taken");
    // The fallback cannot lose its content for the placement.
    let r = admin(
        api,
        "PUT",
        "/v1/offers/house",
        Some(json!({"key": "house", "content": {"card": {"title": "house"}}})),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    // Versions: the same document is no new version; a change is.
    let generic = json!({"key": "generic", "priority": 1, "content": {"hero": "<b>Hello</b>"}});
    assert_eq!(
        put(api, "/v1/offers/generic", generic).await.body["created"],
        false
    );
    let r = put(
        api,
        "/v1/offers/generic",
        json!({"key": "generic", "priority": 2, "content": {"hero": "<b>Hello</b>"}}),
    )
    .await;
    assert_eq!(
        (r.body["version"].as_u64(), &r.body["created"]),
        (Some(2), &json!(true))
    );
    let first = admin(api, "GET", "/v1/offers/generic?version=1", None).await;
    assert_eq!(first.body["priority"], 1);
    let list = admin(api, "GET", "/v1/offers", None).await;
    assert_eq!(
        list.body["items"].as_array().map(Vec::len),
        Some(3),
        "{}",
        list.text
    );

    // A signed-in person in the audience, on the shop page.
    let r = api
        .post(
            "/v1/identify",
            json!({"userId": "u1", "anonymousId": "a1", "traits": {"name": "<Ann>"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/audiences/vip/members?mode=add",
            Auth::Admin(ADMIN),
            b"user_id\nu1\n".to_vec(),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let shop = json!({"userId": "u1", "context": {"page": "/shop"}, "placements": [{"placement": "hero"}]});
    // A write key alone cannot ask about a signed-in person.
    let r = decide(api, Auth::Write(CLIENT_KEY), shop.clone()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["code"], "invalid_user_hash");
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:u1"), shop.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(offers(&r, 0), ["vip-sale"]);
    let placement = &r.body["placements"][0];
    assert_eq!(placement["content_type"], "html");
    assert_eq!(placement["ranking"], "priority");
    assert_eq!(placement["policy"], "home");
    assert_eq!(
        placement["items"][0]["content"],
        "<b>For you, &lt;Ann&gt;</b>"
    );
    let proposition = placement["proposition"]
        .as_str()
        .expect("proposition")
        .to_owned();
    assert!(placement.get("explain").is_none());

    // Elsewhere on the site, or for a visitor, the generic offer.
    let home = json!({"userId": "u1", "context": {"page": "/"}, "placements": [{"placement": "web://shop.example/home#hero"}]});
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:u1"), home).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);
    let visitor = json!({"anonymousId": "someone-new", "context": {"page": "/shop"}, "placements": [{"placement": "hero"}]});
    let r = decide(api, Auth::Write(CLIENT_KEY), visitor).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);
    // Her anonymous id, without her proof, is a visitor too: nothing of hers is shown.
    let hers = json!({"anonymousId": "a1", "context": {"page": "/shop"}, "placements": [{"placement": "hero"}]});
    let r = decide(api, Auth::Write(CLIENT_KEY), hers).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);

    // Someone else's hash does not reach her through her anonymous id either.
    let r = api
        .post(
            "/v1/identify",
            json!({"userId": "bob", "traits": {"name": "Bob"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let as_bob = json!({"userId": "bob", "anonymousId": "a1", "context": {"page": "/shop"}, "placements": [{"placement": "hero"}]});
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:bob"), as_bob).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);
    let stranger = json!({"userId": "carol", "anonymousId": "a1", "context": {"page": "/shop"}, "placements": [{"placement": "hero"}]});
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:carol"), stranger).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);

    // Displays, reported twice each: counted once.
    let r = feedback(
        api,
        "Offer Displayed",
        "u1",
        &proposition,
        "vip-sale",
        "hero",
    )
    .await;
    assert_eq!(r.body["accepted"], 1, "{}", r.text);
    let r = feedback(
        api,
        "Offer Displayed",
        "u1",
        &proposition,
        "vip-sale",
        "hero",
    )
    .await;
    assert_eq!(
        (r.body["accepted"].as_u64(), r.body["duplicates"].as_u64()),
        (Some(0), Some(1)),
        "{}",
        r.text
    );
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:u1"), shop.clone()).await;
    assert_eq!(offers(&r, 0), ["vip-sale"], "one display of two allowed");
    let again = r.body["placements"][0]["proposition"]
        .as_str()
        .expect("p")
        .to_owned();
    assert_ne!(again, proposition);
    feedback(api, "Offer Displayed", "u1", &again, "vip-sale", "hero").await;
    // Two displays this week: capped for her; explain says so (admin only).
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:u1"), shop.clone()).await;
    assert_eq!(offers(&r, 0), ["generic"], "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/decide?explain=true",
            Auth::WriteAs(CLIENT_KEY, "user_id:u1"),
            serde_json::to_vec(&shop).expect("json"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    let r = api
        .call(
            "POST",
            "/v1/decide?explain=true",
            Auth::Admin(ADMIN),
            serde_json::to_vec(&shop).expect("json"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let explain = r.body["placements"][0]["explain"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let why = |offer: &str| {
        explain
            .iter()
            .find(|e| e["offer"] == offer)
            .map(|e| e["why"].clone())
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        why("vip-sale"),
        "capped: this person's displays in 7d reached 2 of 2",
        "{explain:?}"
    );
    assert_eq!(why("house"), "its eligibility is false");
    assert!(
        explain
            .iter()
            .any(|e| e["offer"] == "generic" && e["chosen"] == true)
    );

    // Nothing eligible on the card: no policy, so no fallback either; JSON keeps its shape.
    let card = json!({"userId": "u1", "placements": [{"placement": "card"}]});
    let r = decide(api, Auth::WriteAs(CLIENT_KEY, "user_id:u1"), card).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["placements"][0]["items"], json!([]), "{}", r.text);

    // Malformed requests: 400 with the field.
    for (request, field) in [
        (
            json!({"userId": "u1", "placements": [{"placement": "nowhere"}]}),
            "placements[0].placement",
        ),
        (json!({"userId": "u1", "placements": []}), "placements"),
        (
            json!({"userId": "u1", "placements": [{"placement": "hero", "items": 0}]}),
            "placements[0].items",
        ),
        (
            json!({"userId": "u1", "context": [1], "placements": [{"placement": "hero"}]}),
            "context",
        ),
        (json!({"placements": [{"placement": "hero"}]}), "userId"),
        (
            json!({"userId": "u1", "placements": [{"where": "hero"}]}),
            "placements[0]",
        ),
    ] {
        let r = decide(api, Auth::Admin(ADMIN), request.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{request}: {}", r.text);
        let got = r.body["field"].as_str().unwrap_or_default();
        assert!(got.starts_with(field), "{request}: {got} vs {field}");
    }
    let r = decide(api, Auth::None, shop.clone()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // The learned ranker reads everyone's displays and clicks, counted as feedback arrives.
    put(
        api,
        "/v1/offers/strong",
        json!({"key": "strong", "tags": ["cards"], "content": {"card": {"title": "strong"}}}),
    )
    .await;
    put(
        api,
        "/v1/offers/weak",
        json!({"key": "weak", "tags": ["cards"], "content": {"card": {"title": "weak"}}}),
    )
    .await;
    put(
        api,
        "/v1/collections/cards",
        json!({"key": "cards", "tags": ["cards"]}),
    )
    .await;
    put(
        api,
        "/v1/decision-policies/cards",
        json!({"key": "cards", "placement": "card", "collection": "cards",
            "ranking": {"by": "learned", "exploration": 0}}),
    )
    .await;
    for i in 0..40 {
        let p = format!("sim-{i}");
        feedback(api, "Offer Displayed", "u2", &p, "strong", "card").await;
        feedback(api, "Offer Displayed", "u2", &p, "weak", "card").await;
        if i < 20 {
            feedback(api, "Offer Clicked", "u2", &p, "strong", "card").await;
        }
    }
    // Feedback about an offer that does not exist is kept as an event but counted nowhere.
    feedback(api, "Offer Displayed", "u2", "sim-x", "ghost", "card").await;
    let ask = json!({"anonymousId": "v9", "placements": [{"placement": "card"}]});
    let mut estimate = Value::Null;
    for _ in 0..40 {
        let r = api
            .call(
                "POST",
                "/v1/decide?explain=true",
                Auth::Admin(ADMIN),
                serde_json::to_vec(&ask).expect("json"),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        estimate = r.body["placements"][0]["explain"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["offer"] == "strong")
            .map(|e| e["estimate"].clone())
            .unwrap_or(Value::Null);
        if estimate["displays"] == 40 {
            assert_eq!(r.body["placements"][0]["ranking"], "learned");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(estimate["displays"], 40, "{estimate}");
    assert_eq!(estimate["clicks"], 20, "{estimate}");
    let strong = {
        let mut n = 0;
        for _ in 0..20 {
            let r = decide(api, Auth::Write(CLIENT_KEY), ask.clone()).await;
            if offers(&r, 0) == ["strong"] {
                n += 1;
            }
        }
        n
    };
    assert_eq!(strong, 20, "50% against 0% over 40 displays each");
}

/// The browser client is served as it is, for pages to load.
pub async fn the_browser_client_is_served(api: &Api) {
    let r = api
        .call("GET", "/v1/decide.js", Auth::None, Vec::new(), None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("Offer Displayed") && r.text.contains("/v1/decide"));
}

/// Journeys and campaigns place content on a surface (`code_based`): refused at publish
/// when the placement or the template's field is missing, shown ahead of offers by the
/// journey's priority while the person is in the journey, gone when they leave it.
pub async fn journeys_place_content_ahead_of_offers(api: &Api) {
    put(
        api,
        "/v1/placements/banner",
        json!({"key": "banner", "channel": "web", "surface": "web://shop.example/home#banner", "content": "html"}),
    )
    .await;
    put(
        api,
        "/v1/offers/house",
        json!({"key": "house", "priority": 1, "content": {"banner": "<b>House</b>"}}),
    )
    .await;
    for (key, doc) in [
        (
            "cart-banner",
            json!({"channel": "code_based", "html": "<p>{{profile.traits.name}}, your cart</p>"}),
        ),
        (
            "vip-banner",
            json!({"channel": "code_based", "html": "<p>VIP</p>"}),
        ),
        (
            "text-only",
            json!({"channel": "code_based", "text": "plain"}),
        ),
    ] {
        put(api, &format!("/v1/templates/{key}"), doc).await;
    }
    // Each shows its content until the person does `until` (or a week passes).
    let journey = |key: &str, event: &str, template: &str, surface: &str, priority: i64| {
        let until = if key == "vip" {
            "VIP Lapsed"
        } else {
            "Order Completed"
        };
        json!({"key": key, "entry": {"event": event}, "properties": {"priority": priority},
            "nodes": [
                {"id": "show", "type": "message", "channel": "code_based", "template": template,
                    "surface": surface, "next": "wait"},
                {"id": "wait", "type": "wait", "event": {"name": until, "timeout": "7d",
                    "timeout_next": "done"}, "next": "done"},
                {"id": "done", "type": "end"}]})
    };
    let publish = |key: &'static str, doc: Value| async move {
        put(api, &format!("/v1/journeys/{key}"), doc).await;
        admin(api, "POST", &format!("/v1/journeys/{key}/publish"), None).await
    };
    // A surface no placement has, or a template without what the placement shows, cannot
    // be published.
    let r = publish(
        "nowhere",
        journey(
            "nowhere",
            "Cart Viewed",
            "cart-banner",
            "web://shop.example/none",
            0,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["field"], "nodes[0].surface",
        "{}",
        r.text
    );
    assert_eq!(
        r.body["errors"][0]["code"], "unknown_placement",
        "{}",
        r.text
    );
    let r = publish(
        "plain",
        journey("plain", "Cart Viewed", "text-only", "banner", 0),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.body["errors"][0]["field"], "nodes[0].template",
        "{}",
        r.text
    );
    let r = publish(
        "cart",
        journey(
            "cart",
            "Cart Viewed",
            "cart-banner",
            "web://shop.example/home#banner",
            1,
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = publish(
        "vip",
        journey("vip", "Became VIP", "vip-banner", "banner", 5),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let ask = json!({"userId": "shopper", "placements": [{"placement": "banner", "items": 3}]});
    let shown = |r: &Reply| -> Vec<String> {
        r.body["placements"][0]["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| {
                i["journey"]
                    .as_str()
                    .or(i["offer"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    let asked = || async {
        let r = decide(
            api,
            Auth::WriteAs(CLIENT_KEY, "user_id:shopper"),
            ask.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r
    };
    api.post(
        "/v1/identify",
        json!({"userId": "shopper", "traits": {"name": "<Bo>"}}),
    )
    .await;
    assert_eq!(shown(&asked().await), ["house"]);
    api.post(
        "/v1/track",
        json!({"userId": "shopper", "event": "Cart Viewed"}),
    )
    .await;
    api.post(
        "/v1/track",
        json!({"userId": "shopper", "event": "Became VIP"}),
    )
    .await;
    // The higher priority first, then offers fill what is left.
    let r = asked().await;
    assert_eq!(shown(&r), ["vip", "cart", "house"], "{}", r.text);
    let cart = &r.body["placements"][0]["items"][1];
    assert_eq!(cart["content"], "<p>&lt;Bo&gt;, your cart</p>");
    assert!(cart["message"].is_string(), "{cart}");
    // Feedback about it is an ordinary event, kept once per proposition and message.
    let proposition = r.body["placements"][0]["proposition"].as_str().expect("id");
    for _ in 0..2 {
        let r = api
            .post(
                "/v1/track",
                json!({"userId": "shopper", "event": "Offer Displayed", "properties": {
                    "proposition": proposition, "journey": "cart", "message": cart["message"],
                    "placement": "banner"}}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let events = api
        .get("/v1/profiles/user_id/shopper/events?limit=50")
        .await;
    let displayed = events.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["event"] == "Offer Displayed")
        .count();
    assert_eq!(displayed, 1, "{}", events.text);
    // Leaving the journey (the awaited event) takes its content down.
    api.post(
        "/v1/track",
        json!({"userId": "shopper", "event": "Order Completed"}),
    )
    .await;
    assert_eq!(shown(&asked().await), ["vip", "house"]);
    // Stopping a journey takes its content down.
    let r = admin(api, "POST", "/v1/journeys/vip/stop", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(shown(&asked().await), ["house"]);

    // A campaign places content too: it needs a surface.
    let r = admin(
        api,
        "PUT",
        "/v1/campaigns/spring",
        Some(
            json!({"key": "spring", "audience": "everyone", "channel": "code_based",
            "template": "vip-banner"}),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(
        r.body["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["field"] == "surface"),
        "{}",
        r.text
    );
}
