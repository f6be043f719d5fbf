//! The explorer's page in a real headless browser: Chromium driven through
//! ChromeDriver's WebDriver protocol. It loads the page, draws a 7 on the
//! canvas with pointer actions, and checks that the prediction, every map and
//! the layer view (one panel per tape node) update while the stroke is drawn.
//!
//! Without Chromium and ChromeDriver (Debian: `apt-get install chromium
//! chromium-driver`, which `.ci/run` does) the test says so and is skipped.
//! With `SALIENT_SCREENSHOT=path.png` it also saves a screenshot of the page
//! (the one in the README).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use salient::explore::api::{Explorer, Samples};
use salient::explore::Server;

use common::http_agent as agent;

/// The first of `names` found on `PATH`.
fn find(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A ChromeDriver process, killed when dropped.
struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The JSON of a WebDriver answer (`null` if it is not JSON).
fn read(response: ureq::http::Response<ureq::Body>) -> Value {
    serde_json::from_slice(&common::http_answer(response).1).unwrap_or(Value::Null)
}

/// A WebDriver session on one page.
struct Session {
    driver: Driver,
    id: String,
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.driver.base, self.id)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let response = agent()
            .post(&self.url(path))
            .header("Content-Type", "application/json")
            .send(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let (status, body) = common::http_answer(response);
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert!(status < 300, "WebDriver {path}: {status} {v}");
        v["value"].clone()
    }

    fn get(&self, path: &str) -> Value {
        let response = agent().get(&self.url(path)).call().unwrap();
        read(response)["value"].clone()
    }

    /// Scrolls to the layer view and rests the mouse on the top bar of the
    /// drawn 7 in its "follow one pixel" map.
    fn hover_on_the_stroke(&self) {
        self.js("document.getElementById('layers').scrollIntoView(); return true;");
        let map = self.element("#path-map");
        self.post(
            "/actions",
            json!({ "actions": [{ "type": "pointer", "id": "hover", "parameters": { "pointerType": "mouse" },
                "actions": [{ "type": "pointerMove", "origin": map, "x": 0, "y": -40, "duration": 0 }] }] }),
        );
    }

    /// Saves what the window shows as a PNG file.
    fn screenshot(&self, path: &std::path::Path) {
        let png = self.get("/screenshot");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
        eprintln!("screenshot: {}", path.display());
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn js(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": [] }))
    }

    /// Waits until `script` returns true.
    fn wait_for(&self, script: &str, what: &str) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if self.js(script) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "timed out waiting for {what}; message: {}",
            self.js(MESSAGE)
        );
    }

    /// Waits until no answer has arrived for half a second.
    fn settle(&self) -> u64 {
        let mut last = self.updates();
        let mut since = Instant::now();
        let start = Instant::now();
        while since.elapsed() < Duration::from_millis(500)
            && start.elapsed() < Duration::from_secs(30)
        {
            std::thread::sleep(Duration::from_millis(50));
            let now = self.updates();
            if now != last {
                (last, since) = (now, Instant::now());
            }
        }
        last
    }

    fn updates(&self) -> u64 {
        self.js("return (window.salient && window.salient.updates) || 0;")
            .as_u64()
            .unwrap_or(0)
    }

    /// A WebDriver reference to the element `css` selects.
    fn element(&self, css: &str) -> Value {
        self.post("/element", json!({ "using": "css selector", "value": css }))
    }
}

const MESSAGE: &str = "var m = document.getElementById('message'); return m ? m.textContent : '';";

/// Pointer actions drawing a 7 on an element about 280 px wide, with
/// coordinates relative to its centre: the top bar, then the stroke down.
fn seven(element: &Value) -> Value {
    let mut steps = vec![
        json!({ "type": "pointerMove", "origin": element.clone(), "x": -70, "y": -80, "duration": 0 }),
        json!({ "type": "pointerDown", "button": 0 }),
    ];
    let mut point = |x: i64, y: i64| {
        steps.push(json!({ "type": "pointerMove", "origin": element.clone(), "x": x, "y": y, "duration": 40 }));
    };
    for i in 1..=8 {
        point(-70 + i * 18, -80);
    }
    for i in 1..=12 {
        point(74 - i * 9, -80 + i * 15);
    }
    steps.push(json!({ "type": "pointerUp", "button": 0 }));
    json!({ "actions": [{ "type": "pointer", "id": "finger", "parameters": { "pointerType": "mouse" }, "actions": steps }] })
}

#[test]
fn drawing_a_seven_updates_the_prediction_every_map_and_the_layer_view() {
    let (Some(chromium), Some(chromedriver)) = (
        find(&["chromium", "chromium-browser", "google-chrome"]),
        find(&["chromedriver"]),
    ) else {
        eprintln!(
            "skipped: the browser test needs chromium and chromedriver on PATH \
             (Debian: apt-get install chromium chromium-driver)"
        );
        return;
    };

    let (model, test) = common::small_trained_mnist();
    let samples = Samples {
        source: "fixtures/mnist-sample, test split".into(),
        set: test.clone(),
    };
    // The small test model, or a checkpoint of the user's (for the README's screenshots).
    let (model, name) = match std::env::var_os("SALIENT_EXPLORE_MODEL") {
        Some(path) => (
            salient::model::load(path.as_ref()).unwrap(),
            "mnist-sample.safetensors",
        ),
        None => (model.clone(), "small.safetensors"),
    };
    let explorer = Explorer::new(model, name.into(), Some(samples)).unwrap();
    let server = Server::bind("127.0.0.1:0", explorer).unwrap().spawn();

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let driver = Driver {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let start = Instant::now();
    loop {
        let ready = agent()
            .get(&format!("{}/status", driver.base))
            .call()
            .map(|r| read(r)["value"]["ready"] == Value::Bool(true))
            .unwrap_or(false);
        if ready {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let capabilities = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1900"]
        },
        "goog:loggingPrefs": { "browser": "ALL" }
    }}});
    let response = agent()
        .post(&format!("{}/session", driver.base))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&capabilities).unwrap())
        .unwrap();
    let created = read(response);
    let id = created["value"]["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {created}"))
        .to_string();
    let session = Session { driver, id };

    // The page loads, explains its first sample, and draws it all.
    session.post(
        "/url",
        json!({ "url": format!("http://{}/", server.addr()) }),
    );
    session.wait_for(
        "return !!(window.salient && window.salient.updates >= 1);",
        "the first answer",
    );
    session.settle();

    // A blank canvas, then a 7 drawn with the mouse.
    session.js("document.getElementById('clear').click(); return true;");
    let before = session.settle();
    let draw = session.element("#draw");
    session.post("/actions", seven(&draw));
    let after = session.settle();
    // Live: answers arrived while the stroke was drawn, not only at its end.
    assert!(
        after >= before + 2,
        "updates before {before}, after {after}"
    );

    let state = session.js(
        "const s = window.salient, last = s.last;
         const maps = [...document.querySelectorAll('canvas.map')];
         const blank = maps.filter(c => {
             const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
             for (let i = 4; i < d.length; i += 4) if (d[i] !== d[0] || d[i+1] !== d[1] || d[i+2] !== d[2]) return false;
             return true;
         }).map(c => c.dataset.method);
         const stale = maps.filter(c => Number(c.dataset.version) !== s.updates).map(c => c.dataset.method);
         const input = last.trace.nodes[0].value;
         return {
             updates: s.updates, predicted: last.predicted, probabilities: last.probabilities,
             methods: last.maps.map(m => m.method), mapCanvases: maps.map(c => c.dataset.method),
             blank, stale, panels: document.querySelectorAll('.node-panel').length,
             nodes: last.trace.nodes.length, ink: input.reduce((a, v) => a + v, 0),
             bars: document.querySelectorAll('#prediction *').length,
             timing: last.timing_ms
         };",
    );
    let status = session.js("return document.getElementById('status').textContent;");
    eprintln!(
        "drew a 7: predicted {}, {} updates; {}",
        state["predicted"], state["updates"], status
    );
    let methods = state["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 8, "the default methods: {state}");
    // Every method asked for has a drawn map of this answer, none blank.
    for m in methods {
        assert!(
            state["mapCanvases"].as_array().unwrap().contains(m),
            "{m} has no map"
        );
    }
    assert_eq!(state["stale"], json!([]), "maps not redrawn: {state}");
    assert_eq!(state["blank"], json!([]), "blank maps: {state}");
    // One panel per tape node.
    assert_eq!(state["panels"], state["nodes"]);
    assert_eq!(state["nodes"], json!(9));
    // The stroke reached the model's input.
    assert!(state["ink"].as_f64().unwrap() > 10.0, "{state}");
    assert!(state["bars"].as_u64().unwrap() > 0);

    // The page's post-processing is the library's (keras-vis's).
    let diff = session.js(
        "const last = window.salient.last, shape = window.salient.model.input_shape;
         let worst = 0;
         for (const m of last.maps) {
             const got = window.salient.postprocess(m.raw, shape, m.spatial, { abs: true, max: true, norm: true });
             for (let i = 0; i < m.map.length; i++) worst = Math.max(worst, Math.abs(got[i] - m.map[i]));
         }
         return worst;",
    );
    assert!(
        diff.as_f64().unwrap() <= 1e-5,
        "post-processing differs by {diff}"
    );

    // The rule switch changes the traced backward pass.
    let updates = session.updates();
    session.js("document.querySelector('input[name=rule][value=guided]').click(); return true;");
    session.wait_for(
        &format!("return window.salient.updates > {updates} && window.salient.last.trace.rule === 'guided';"),
        "the guided trace",
    );
    session.settle();
    let panels = session.js(
        "return [document.querySelectorAll('.node-panel').length, window.salient.last.trace.nodes.length];",
    );
    assert_eq!(panels[0], panels[1]);

    // Hovering a pixel on the stroke says its path up to the class, in words.
    session.hover_on_the_stroke();
    let info = session.js("return document.getElementById('hover-info').textContent;");
    let info = info.as_str().unwrap_or("");
    assert!(
        info.contains("→ conv2d") && info.contains("→ class"),
        "{info}"
    );

    // No error shown, none in the console.
    assert_eq!(
        session.js(MESSAGE).as_str().unwrap_or("").trim(),
        "",
        "the page shows an error"
    );
    let logs = agent()
        .post(&session.url("/se/log"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_vec(&json!({ "type": "browser" })).unwrap())
        .map(read)
        .unwrap_or(Value::Null);
    if let Some(entries) = logs["value"].as_array() {
        let severe: Vec<&Value> = entries.iter().filter(|e| e["level"] == "SEVERE").collect();
        assert!(severe.is_empty(), "console errors: {severe:?}");
    }

    if let Some(path) = std::env::var_os("SALIENT_SCREENSHOT") {
        session
            .js("document.querySelector('input[name=rule][value=gradient]').click(); return true;");
        session.settle();
        let path = PathBuf::from(path);
        session.js("window.scrollTo(0, 0); return true;");
        std::thread::sleep(Duration::from_millis(300));
        session.screenshot(&path);
        // Then the layer view, with the path of a pixel on the stroke lit up.
        session.hover_on_the_stroke();
        std::thread::sleep(Duration::from_millis(300));
        session.screenshot(&path.with_file_name(format!(
            "{}-layers.png",
            path.file_stem().unwrap().to_string_lossy()
        )));
    }
    let _ = agent().delete(&session.url("")).call();
    server.stop();
}
