package reports

import (
	"bytes"
	"context"
	"fmt"
	"image/color"
	"image/png"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const (
	viewW, viewH = 1280, 900
	chromiumPath = "/usr/bin/chromium"
)

type plotBox struct {
	Plot  string  `json:"plot"`
	SVG   bool    `json:"svg"`
	W     float64 `json:"w"`
	H     float64 `json:"h"`
	Paths int     `json:"paths"`
}

type pageState struct {
	Verdict string    `json:"verdict"`
	Plots   []plotBox `json:"plots"`
	NoData  []string  `json:"nodata"`
	Scripts int       `json:"scripts"`
	Text    string    `json:"text"`
}

const inspectJS = `({
  verdict: document.getElementById('verdict').textContent,
  plots: Array.from(document.querySelectorAll('figure[data-plot]')).map(f => {
    const s = f.querySelector('svg');
    const r = s ? s.getBoundingClientRect() : {width: 0, height: 0};
    return {plot: f.dataset.plot, svg: !!s, w: r.width, h: r.height, paths: s ? s.querySelectorAll('path').length : 0};
  }),
  nodata: Array.from(document.querySelectorAll('[data-nodata]')).map(e => e.dataset.nodata),
  scripts: document.querySelectorAll('script').length,
  text: document.body.innerText,
})`

// TestHTMLInBrowser loads the pages in headless Chromium: no console
// messages, no exceptions, no request but the page itself, the verdict
// shown, the plots drawn at a real size, and a screenshot that looks like
// the page.
func TestHTMLInBrowser(t *testing.T) {
	chromium := requireTool(t, chromiumPath)
	out := os.Getenv("CKPTGATE_ARTIFACTS")
	if out == "" {
		out = t.TempDir()
	} else if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}

	hostile := newFixtureReport(t)
	hostile.Add(Check{ID: "tensors.source_exact", Status: StatusSkip, Message: "no source given"},
		Check{ID: "sidefiles.present", Status: StatusPass, Subject: "<script>alert(1)</script>", Message: "<img src=x onerror=alert(2)>"})
	pages := []struct {
		name    string
		r       *Report
		verdict string
		plots   []string
		banner  color.RGBA
	}{
		{"pass", passingReport(t), "PASS", []string{"drift", "relerr", "logits"}, color.RGBA{0x1a, 0x7f, 0x37, 0xff}},
		{"fail", failingReport(t), "FAIL", []string{"drift", "relerr", "logits"}, color.RGBA{0xcf, 0x22, 0x2e, 0xff}},
		{"nodata", hostile, "PASS", nil, color.RGBA{0x1a, 0x7f, 0x37, 0xff}},
	}

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(viewW, viewH),
	)
	defer cancel()
	browser, cancel := chromedp.NewContext(alloc)
	defer cancel()
	browser, cancel = context.WithTimeout(browser, 90*time.Second)
	defer cancel()
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start %s: %v", chromium, err)
	}

	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			path, err := filepath.Abs(filepath.Join(out, "report-"+p.name+".html"))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, render(t, p.r, FormatHTML), 0o644); err != nil {
				t.Fatal(err)
			}
			pageURL := (&url.URL{Scheme: "file", Path: path}).String()

			tab, cancel := chromedp.NewContext(browser)
			defer cancel()
			var mu sync.Mutex
			var problems, requests []string
			err = chromedp.Listen(tab, func(ev any) {
				mu.Lock()
				defer mu.Unlock()
				switch ev := ev.(type) {
				case *runtime.EventConsoleAPICalled:
					var args []string
					for _, a := range ev.Args {
						args = append(args, string(a.Value)+a.Description)
					}
					problems = append(problems, fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " ")))
				case *runtime.EventExceptionThrown:
					msg := ev.ExceptionDetails.Text
					if ev.ExceptionDetails.Exception != nil {
						msg += " " + ev.ExceptionDetails.Exception.Description
					}
					problems = append(problems, "exception: "+msg)
				case *log.EventEntryAdded:
					problems = append(problems, fmt.Sprintf("log %s/%s: %s %s", ev.Entry.Source, ev.Entry.Level, ev.Entry.Text, ev.Entry.URL))
				case *network.EventRequestWillBeSent:
					requests = append(requests, ev.Request.URL)
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			err = chromedp.Do(tab,
				chromedp.EmulateViewport(viewW, viewH),
				chromedp.Navigate(pageURL),
				chromedp.WaitReady(chromedp.ID("verdict")),
			)
			if err != nil {
				t.Fatalf("load %s: %v", pageURL, err)
			}
			state, err := chromedp.Run(tab, chromedp.Evaluate[pageState](inspectJS))
			if err != nil {
				t.Fatalf("inspect %s: %v", pageURL, err)
			}
			shot, err := chromedp.Run(tab, chromedp.CaptureScreenshot())
			if err != nil {
				t.Fatalf("screenshot %s: %v", pageURL, err)
			}
			// The whole page, for people to look at (quality 100: PNG).
			full, err := chromedp.Run(tab, chromedp.FullScreenshot(100))
			if err != nil {
				t.Fatalf("full-page screenshot %s: %v", pageURL, err)
			}
			// Console and log events can trail the load a little.
			if err := chromedp.Do(tab, chromedp.Sleep(200*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			for _, pr := range problems {
				t.Errorf("browser reported %s", pr)
			}
			for _, u := range requests {
				if u != pageURL {
					t.Errorf("page requested %s", u)
				}
			}
			mu.Unlock()

			if state.Verdict != p.verdict {
				t.Errorf("verdict %q, want %q", state.Verdict, p.verdict)
			}
			if state.Scripts != 0 {
				t.Errorf("%d script elements", state.Scripts)
			}
			var drawn []string
			for _, b := range state.Plots {
				if !b.SVG || b.W < 200 || b.H < 150 || b.Paths < 10 {
					t.Errorf("plot %s: svg %v, %.0f×%.0f px, %d paths; want a drawn plot", b.Plot, b.SVG, b.W, b.H, b.Paths)
				}
				drawn = append(drawn, b.Plot)
			}
			if strings.Join(drawn, ",") != strings.Join(p.plots, ",") {
				t.Errorf("plots %v, want %v", drawn, p.plots)
			}
			if len(p.plots) == 0 && len(state.NoData) != 3 {
				t.Errorf("sections saying no data: %v, want drift, relerr, logits", state.NoData)
			}
			if p.name == "nodata" && !strings.Contains(state.Text, "<img src=x onerror=alert(2)>") {
				t.Error("the page does not show the hostile message as text")
			}

			shotPath := filepath.Join(out, "report-"+p.name+".png")
			if err := os.WriteFile(shotPath, shot, 0o644); err != nil {
				t.Fatal(err)
			}
			checkScreenshot(t, shot, p.banner)
			if err := os.WriteFile(filepath.Join(out, "report-"+p.name+"-full.png"), full, 0o644); err != nil {
				t.Fatal(err)
			}
			if img, err := png.Decode(bytes.NewReader(full)); err != nil || img.Bounds().Dx() != viewW || img.Bounds().Dy() < viewH {
				t.Errorf("full-page screenshot: %v, bounds want %d wide, at least %d high", err, viewW, viewH)
			}
		})
	}
}

// checkScreenshot decodes the PNG and checks its size, that it is not
// blank, and that the verdict banner has its colour.
func checkScreenshot(t *testing.T, shot []byte, banner color.RGBA) {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("screenshot is not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() != viewW || b.Dy() != viewH {
		t.Errorf("screenshot %v, want %d×%d", b, viewW, viewH)
	}
	colours := map[color.RGBA]int{}
	for y := img.Bounds().Min.Y; y < img.Bounds().Max.Y; y += 3 {
		for x := img.Bounds().Min.X; x < img.Bounds().Max.X; x += 3 {
			colours[color.RGBAModel.Convert(img.At(x, y)).(color.RGBA)]++
		}
	}
	if len(colours) < 50 {
		t.Errorf("screenshot has %d colours: blank?", len(colours))
	}
	// The banner spans the top of the page: its middle has its colour.
	got := color.RGBAModel.Convert(img.At(viewW/2, 50)).(color.RGBA)
	if !near(got, banner) {
		t.Errorf("banner colour %v at (%d, 50), want %v", got, viewW/2, banner)
	}
}

func near(a, b color.RGBA) bool {
	d := func(x, y uint8) int { return max(int(x)-int(y), int(y)-int(x)) }
	return d(a.R, b.R) < 8 && d(a.G, b.G) < 8 && d(a.B, b.B) < 8
}
