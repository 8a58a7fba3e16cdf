//! A browser-less dashboard client for tests: one session's cookie jar, forms posted as a
//! browser posts them, the sign-in dance (double-submit cookie, then the session's CSRF token).

use crate::common::{token_for, within, Server};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A browser-less dashboard client: a cookie jar of one session, forms posted as a browser would.
pub struct Ui {
    pub base: String,
    pub cookies: Vec<(String, String)>,
    pub csrf: String,
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// The value of `name="{field}" value="…"` in a page.
pub fn form_value(html: &str, field: &str) -> Option<String> {
    let at = html.find(&format!("name=\"{field}\" value=\""))?;
    let rest = &html[at + field.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

impl Ui {
    pub fn new(s: &Server) -> Ui {
        Ui { base: format!("http://{}", s.admin), cookies: Vec::new(), csrf: String::new() }
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        form: Option<&[(&str, &str)]>,
        extra: &[(&str, &str)],
    ) -> Answer {
        let url = format!("{}{path}", self.base);
        let body =
            form.map(|f| form_urlencoded::Serializer::new(String::new()).extend_pairs(f).finish()).unwrap_or_default();
        within(30, "dashboard request", async {
            let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let mut b = http::Request::builder().method(method).uri(&url).header("accept", "text/html");
            if form.is_some() {
                b = b.header("content-type", "application/x-www-form-urlencoded");
            }
            if !self.cookies.is_empty() {
                let jar: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
                b = b.header("cookie", jar.join("; "));
            }
            for (k, v) in extra {
                b = b.header(*k, *v);
            }
            let resp = c.request(b.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            for sc in headers.get_all("set-cookie") {
                let sc = sc.to_str().unwrap();
                let (kv, _) = sc.split_once(';').unwrap_or((sc, ""));
                let (k, v) = kv.split_once('=').unwrap();
                self.cookies.retain(|(ck, _)| ck != k);
                if !sc.contains("Max-Age=0") {
                    self.cookies.push((k.to_owned(), v.to_owned()));
                }
            }
            let body = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
            Answer { status, headers, body }
        })
        .await
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    /// Posts a form with this session's CSRF token added.
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let csrf = self.csrf.clone();
        let mut f: Vec<(&str, &str)> = form.to_vec();
        f.push(("csrf", &csrf));
        self.send("POST", path, Some(&f), &[]).await
    }

    /// Signs in with a role's token, the way the sign-in form does.
    pub async fn sign_in(s: &Server, role: &str) -> Ui {
        Ui::sign_in_with(s, &token_for(role)).await
    }

    /// Signs in with any token (a customer token, say).
    pub async fn sign_in_with(s: &Server, token: &str) -> Ui {
        let mut ui = Ui::new(s);
        let page = ui.get("/ui/login").await;
        assert_eq!(page.status, 200);
        let guard = form_value(&page.body, "login_csrf").expect("the sign-in form has its CSRF field");
        let a = ui.send("POST", "/ui/login", Some(&[("login_csrf", &guard), ("token", token)]), &[]).await;
        assert_eq!(a.status, 303, "signed in: {}", a.body);
        let home = ui.get("/ui/").await;
        assert_eq!(home.status, 303);
        let next = home.headers["location"].to_str().unwrap().to_owned();
        let page = ui.get(&next).await;
        ui.csrf = form_value(&page.body, "csrf").expect("a signed-in page carries the CSRF token");
        ui
    }

    /// The value of one of this session's cookies.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}
