/* Waymark's browser client for offer decisioning. Load it from your Waymark server:
 *   <script src="https://waymark.example/v1/decide.js"></script>
 * then ask for placements:
 *   Waymark.decide({
 *     url: "https://waymark.example", writeKey: "<client write key>",
 *     userId: "u1", userHash: "<from your backend>",   // or neither, for a visitor
 *     context: { cart: { total: 42 } },
 *     placements: [{ placement: "home-hero", selector: "#hero" }],
 *   });
 * Each chosen item is put in its element (HTML as HTML, text as text, an image as <img>,
 * JSON through your onItem(element, item, placement) if given), its display is reported
 * once as an `Offer Displayed` event, and its first click as `Offer Clicked` (an offer by
 * its key; content a journey placed by its journey and message id). */
(function (global) {
  "use strict";

  function anonymousId() {
    var key = "waymark_anonymous_id";
    try {
      var id = global.localStorage.getItem(key);
      if (!id) {
        id = global.crypto && global.crypto.randomUUID
          ? global.crypto.randomUUID()
          : "a-" + Date.now().toString(36) + Math.random().toString(36).slice(2);
        global.localStorage.setItem(key, id);
      }
      return id;
    } catch (e) {
      return "a-" + Date.now().toString(36) + Math.random().toString(36).slice(2);
    }
  }

  function headers(o) {
    var h = {
      "Content-Type": "application/json",
      Authorization: "Basic " + global.btoa(o.writeKey + ":"),
    };
    if (o.userHash) h["X-Waymark-User-Hash"] = o.userHash;
    return h;
  }

  function track(o, event, placement, item) {
    return global.fetch(o.url + "/v1/track", {
      method: "POST",
      headers: headers(o),
      keepalive: true,
      body: JSON.stringify({
        event: event,
        userId: o.userId,
        anonymousId: o.anonymousId,
        properties: {
          proposition: placement.proposition,
          offer: item.offer,
          journey: item.journey,
          message: item.message,
          placement: placement.placement,
        },
      }),
    });
  }

  function render(o, box, placement, item) {
    if (o.onItem) return o.onItem(box, item, placement);
    switch (placement.content_type) {
      case "html":
        box.innerHTML = item.content;
        break;
      case "image":
        var img = global.document.createElement("img");
        img.src = item.content;
        box.appendChild(img);
        break;
      case "text":
        box.textContent = item.content;
        break;
      default:
        box.textContent = JSON.stringify(item.content);
    }
  }

  function decide(options) {
    var o = Object.assign({}, options);
    o.url = (o.url || "").replace(/\/$/, "");
    o.anonymousId = o.anonymousId || anonymousId();
    var context = o.context || {};
    if (!context.page && global.location) {
      context.page = { url: global.location.href, path: global.location.pathname };
    }
    return global
      .fetch(o.url + "/v1/decide", {
        method: "POST",
        headers: headers(o),
        body: JSON.stringify({
          userId: o.userId,
          anonymousId: o.anonymousId,
          context: context,
          placements: o.placements.map(function (a) {
            return { placement: a.placement, items: a.items };
          }),
        }),
      })
      .then(function (res) {
        if (!res.ok) {
          return res.text().then(function (t) {
            throw new Error("Waymark decide: " + res.status + " " + t);
          });
        }
        return res.json();
      })
      .then(function (answer) {
        var reports = [];
        answer.placements.forEach(function (placement, i) {
          var ask = o.placements[i];
          var el = ask.element || (ask.selector && global.document.querySelector(ask.selector));
          if (!el || !placement.items.length) return;
          el.replaceChildren();
          placement.items.forEach(function (item) {
            var box = global.document.createElement("div");
            if (item.offer) box.setAttribute("data-waymark-offer", item.offer);
            if (item.journey) box.setAttribute("data-waymark-journey", item.journey);
            render(o, box, placement, item);
            box.addEventListener(
              "click",
              function () { track(o, "Offer Clicked", placement, item); },
              { once: true }
            );
            el.appendChild(box);
            reports.push(track(o, "Offer Displayed", placement, item));
          });
        });
        return Promise.all(reports).then(function () { return answer; });
      });
  }

  global.Waymark = Object.assign(global.Waymark || {}, { decide: decide, track: track });
})(window);
