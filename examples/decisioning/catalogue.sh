#!/usr/bin/env bash
# A small catalogue for examples/decisioning/index.html:
#   URL=http://127.0.0.1:8080 ADMIN=<admin token> examples/decisioning/catalogue.sh
set -euo pipefail
: "${URL:=http://127.0.0.1:8080}" "${ADMIN:?the admin token}"
put() { curl -sf -X PUT -H "Authorization: Bearer $ADMIN" -H 'content-type: application/yaml' --data-binary "$2" "$URL$1" >/dev/null; echo "saved $1"; }
put /v1/placements/home-hero 'key: home-hero
channel: web
surface: web://shop.example/home#hero
content: html'
put /v1/placements/home-sidebar 'key: home-sidebar
channel: web
surface: web://shop.example/home#sidebar
content: text'
put /v1/offers/big-cart 'key: big-cart
priority: 10
eligibility: context.cart.total >= 100
content:
  home-hero: "<strong>Free delivery</strong> on your {{context.cart.total}} € cart"'
put /v1/offers/welcome 'key: welcome
priority: 1
content:
  home-hero: "<strong>Welcome!</strong> 10% off your first order"
  home-sidebar: "New here? Take the tour"'
put /v1/offers/boots 'key: boots
tags: [sidebar]
caps: [{per: person, max: 3, window: 1d}]
content:
  home-sidebar: "Winter boots, 20% off"'
put /v1/offers/scarves 'key: scarves
tags: [sidebar]
content:
  home-sidebar: "Scarves for every coat"'
put /v1/collections/sidebar 'key: sidebar
tags: [sidebar]'
put /v1/decision-policies/home-hero 'key: home-hero
placement: home-hero
fallback: welcome'
put /v1/decision-policies/home-sidebar 'key: home-sidebar
placement: home-sidebar
collection: sidebar
items: 2
fallback: welcome
ranking:
  by: learned
  exploration: 0.1'
