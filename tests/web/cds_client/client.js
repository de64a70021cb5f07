"use strict";

const config = JSON.parse(decodeURIComponent(location.hash.slice(1)));

async function call(path, token, body) {
  const headers = {"Authorization": "Bearer " + token, "Accept": "application/json"};
  if (body) {
    headers["Content-Type"] = "application/json";
  }
  const response = await fetch(config.service + path, {
    method: body ? "POST" : "GET", headers: headers, body: body ? JSON.stringify(body) : undefined,
  });
  return [response.status, await response.json()];
}

function feedback(card, index, item) {
  const status = document.querySelector(`#card-${index} .status`);
  item.card = card.uuid;
  item.outcomeTimestamp = new Date().toISOString();
  call(`/cds-services/${config.serviceId}/feedback`, config.tokens.feedback[index], {feedback: [item]})
    .then(([code, body]) => { status.textContent = `${code}: stored ${body.stored}`; })
    .catch((error) => { status.textContent = "failed: " + error; });
}

function render(card, index) {
  const article = document.createElement("article");
  article.id = `card-${index}`;
  const title = document.createElement("h2");
  title.textContent = card.summary;
  const detail = document.createElement("div");
  detail.className = "detail";
  detail.textContent = card.detail || "";
  article.append(title, detail);
  for (const link of card.links || []) {
    const anchor = document.createElement("a");
    anchor.href = link.url;
    anchor.textContent = link.label;
    article.append(anchor);
  }
  const accept = document.createElement("button");
  accept.className = "accept";
  accept.textContent = "Accept";
  accept.onclick = () => feedback(card, index, {outcome: "accepted",
                                                acceptedSuggestions: [{id: card.suggestions[0].uuid}]});
  const override = document.createElement("button");
  override.className = "override";
  override.textContent = "Override";
  const reason = card.overrideReasons[0];
  override.onclick = () => feedback(card, index, {outcome: "overridden",
                                                  overrideReason: {reason: {system: reason.system, code: reason.code}}});
  const status = document.createElement("p");
  status.className = "status";
  article.append(accept, override, status);
  return article;
}

async function run() {
  const [found, discovery] = await call("/cds-services", config.tokens.discovery);
  document.getElementById("discovery").textContent = `${found}: ${discovery.services.map((s) => s.hook).join(", ")}`;
  const [answered, response] = await call(`/cds-services/${config.serviceId}`, config.tokens.hook, config.request);
  document.getElementById("hook").textContent = `${answered}: ${response.cards.length} cards`;
  response.cards.forEach((card, index) => document.getElementById("cards").append(render(card, index)));
}

run().catch((error) => { document.getElementById("hook").textContent = "failed: " + error; });
