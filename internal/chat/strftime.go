package chat

import (
	"fmt"
	"strings"
	"time"
)

// Strftime formats t as Python's datetime.strftime does on Linux in the C
// locale, for a naive datetime (what transformers' strftime_now formats:
// datetime.now()). %z and %Z are empty for naive datetimes; a "-" flag
// drops padding as glibc does; unknown directives are copied as they are.
func Strftime(t time.Time, format string) string {
	var b strings.Builder
	for i := 0; i < len(format); i++ {
		c := format[i]
		if c != '%' || i+1 >= len(format) {
			b.WriteByte(c)
			continue
		}
		i++
		pad := true
		if format[i] == '-' && i+1 < len(format) {
			pad = false
			i++
		}
		d := format[i]
		if s, ok := directive(t, d, pad); ok {
			b.WriteString(s)
			continue
		}
		b.WriteByte('%')
		if !pad {
			b.WriteByte('-')
		}
		b.WriteByte(d)
	}
	return b.String()
}

func directive(t time.Time, d byte, pad bool) (string, bool) {
	num := func(v, width int, fill byte) string {
		if !pad {
			return fmt.Sprint(v)
		}
		s := fmt.Sprint(v)
		for len(s) < width {
			s = string(fill) + s
		}
		return s
	}
	hour12 := t.Hour() % 12
	if hour12 == 0 {
		hour12 = 12
	}
	isoYear, isoWeek := t.ISOWeek()
	weekday := int(t.Weekday())
	yday := t.YearDay() - 1
	switch d {
	case 'a':
		return t.Weekday().String()[:3], true
	case 'A':
		return t.Weekday().String(), true
	case 'b', 'h':
		return t.Month().String()[:3], true
	case 'B':
		return t.Month().String(), true
	case 'c':
		return Strftime(t, "%a %b %e %H:%M:%S %Y"), true
	case 'C':
		return num(t.Year()/100, 2, '0'), true
	case 'd':
		return num(t.Day(), 2, '0'), true
	case 'D':
		return Strftime(t, "%m/%d/%y"), true
	case 'e':
		return num(t.Day(), 2, ' '), true
	case 'f':
		return fmt.Sprintf("%06d", t.Nanosecond()/1000), true
	case 'F':
		return Strftime(t, "%Y-%m-%d"), true
	case 'G':
		return fmt.Sprint(isoYear), true
	case 'H':
		return num(t.Hour(), 2, '0'), true
	case 'I':
		return num(hour12, 2, '0'), true
	case 'j':
		return num(t.YearDay(), 3, '0'), true
	case 'k':
		return num(t.Hour(), 2, ' '), true
	case 'l':
		return num(hour12, 2, ' '), true
	case 'm':
		return num(int(t.Month()), 2, '0'), true
	case 'M':
		return num(t.Minute(), 2, '0'), true
	case 'n':
		return "\n", true
	case 'p':
		if t.Hour() < 12 {
			return "AM", true
		}
		return "PM", true
	case 'R':
		return Strftime(t, "%H:%M"), true
	case 'S':
		return num(t.Second(), 2, '0'), true
	case 't':
		return "\t", true
	case 'T':
		return Strftime(t, "%H:%M:%S"), true
	case 'u':
		if weekday == 0 {
			return "7", true
		}
		return fmt.Sprint(weekday), true
	case 'U':
		return num((yday+7-weekday)/7, 2, '0'), true
	case 'V':
		return num(isoWeek, 2, '0'), true
	case 'w':
		return fmt.Sprint(weekday), true
	case 'W':
		return num((yday+7-(weekday+6)%7)/7, 2, '0'), true
	case 'x':
		return Strftime(t, "%m/%d/%y"), true
	case 'X':
		return Strftime(t, "%H:%M:%S"), true
	case 'y':
		return num(t.Year()%100, 2, '0'), true
	case 'Y':
		return fmt.Sprint(t.Year()), true
	case 'z', 'Z':
		return "", true
	case '%':
		return "%", true
	}
	return "", false
}
